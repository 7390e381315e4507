"""HuggingFace `transformers` ViViT <-> this project's Model 1 (spatio-temporal, CLS token).

HF's `VivitForVideoClassification` is a port of Scenic's ViViT-B/16x2: the same
pre-LN encoder with a CLS token, a final LayerNorm and a linear classifier on the CLS output.
Differences are layout only:

| Scenic (ours)                                   | HuggingFace                                       |
|-------------------------------------------------|---------------------------------------------------|
| video `[B, T, H, W, C]`                         | `pixel_values` `[B, T, C, H, W]`                  |
| `embedding/kernel` `(t, h, w, C, D)`            | `...projection.weight` `(D, C, t, h, w)`          |
| `patches.size = (h, w, t)`                      | `tubelet_size = [t, h, w]`                        |
| q/k/v kernel `(D, heads, D/heads)`              | `(heads*D/heads, D)` (torch Linear: out x in)     |
| `out` kernel `(heads, D/heads, D)`              | `(D, heads*D/heads)`                              |
| Dense kernel `(in, out)`, LayerNorm `scale`     | Linear weight `(out, in)`, LayerNorm `weight`     |

transformers 4.x names (`encoder.layer.N.attention.attention.query`, also on the Hub) and 5.x
names (`layers.N.attention.q_proj`) are both read; we write the 4.x names, which both versions
load. Reading `model.safetensors` needs no torch; `pytorch_model.bin` does.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vivit_jax.checkpoints import trees
from vivit_jax.checkpoints.trees import CheckpointError, Tree

# transformers' GELU variants that are the tanh approximation (Flax's `nn.gelu` default).
_TANH_GELUS = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh")
_QKV = ("query", "key", "value")
_LAYER = re.compile(r"^(?:vivit\.)?(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
_LAYER_PARTS = {
    "attention.attention.query": ("MultiHeadDotProductAttention_0", "query"),
    "attention.q_proj": ("MultiHeadDotProductAttention_0", "query"),
    "attention.attention.key": ("MultiHeadDotProductAttention_0", "key"),
    "attention.k_proj": ("MultiHeadDotProductAttention_0", "key"),
    "attention.attention.value": ("MultiHeadDotProductAttention_0", "value"),
    "attention.v_proj": ("MultiHeadDotProductAttention_0", "value"),
    "attention.output.dense": ("MultiHeadDotProductAttention_0", "out"),
    "attention.o_proj": ("MultiHeadDotProductAttention_0", "out"),
    "intermediate.dense": ("MlpBlock_0", "Dense_0"),
    "mlp.fc1": ("MlpBlock_0", "Dense_0"),
    "output.dense": ("MlpBlock_0", "Dense_1"),
    "mlp.fc2": ("MlpBlock_0", "Dense_1"),
    "layernorm_before": ("LayerNorm_0",),
    "layernorm_after": ("LayerNorm_1",),
}


def read_state_dict(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads the weights of a `save_pretrained` directory into {name: numpy array}."""
    directory = os.fspath(directory)
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    torch_bin = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(single):
        return _read_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            shard_names = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for name in shard_names:
            state.update(_read_safetensors(os.path.join(directory, name)))
        return state
    if os.path.exists(torch_bin):
        try:
            import torch
        except ImportError as e:
            raise CheckpointError(
                f"{torch_bin!r} is a PyTorch pickle and reading it needs torch "
                "(`pip install torch`); or convert it to model.safetensors."
            ) from e
        try:
            raw = torch.load(torch_bin, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"Cannot read {torch_bin!r}: truncated or corrupt ({e!r})."
            ) from e
        return {k: v.detach().float().numpy() for k, v in raw.items()}
    raise FileNotFoundError(
        f"No model weights in {directory!r}: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin."
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:  # SafetensorError does not subclass a common base.
        raise CheckpointError(f"Cannot read {path!r}: truncated or corrupt ({e!r}).") from e


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = os.path.join(os.fspath(directory), "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No config.json in {os.fspath(directory)!r}.")
    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path!r} is not valid JSON ({e}).") from e
    if config.get("model_type") != "vivit":
        raise CheckpointError(
            f"{path!r} describes model_type={config.get('model_type')!r}; only 'vivit' "
            "(VivitModel / VivitForVideoClassification) can be read."
        )
    return config


def model_config_from_huggingface(hf: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """The `config.model` (Scenic keys) of the Model 1 equivalent to a HF `VivitConfig`."""
    t, h, w = (int(x) for x in hf.get("tubelet_size", (2, 16, 16)))
    act = hf.get("hidden_act", "gelu_fast")
    if act not in _TANH_GELUS:
        logging.warning(
            "HF hidden_act=%r is not the tanh GELU used here; logits will differ slightly.", act
        )
    eps = float(hf.get("layer_norm_eps", 1e-6))
    if abs(eps - 1e-6) > 1e-12:
        logging.warning("HF layer_norm_eps=%g differs from ViViT's 1e-6; logits may differ.", eps)
    if int(hf.get("num_channels", 3)) != 3:
        raise CheckpointError(f"HF num_channels={hf['num_channels']}; ViViT expects RGB (3).")
    cfg = ml_collections.ConfigDict()
    cfg.attention_config = ml_collections.ConfigDict(
        {"type": "spacetime", "attention_order": "time_space", "spatial_only_baseline": False}
    )
    cfg.hidden_size = int(hf.get("hidden_size", 768))
    cfg.num_heads = int(hf.get("num_attention_heads", 12))
    cfg.mlp_dim = int(hf.get("intermediate_size", 3072))
    cfg.num_layers = int(hf.get("num_hidden_layers", 12))
    cfg.representation_size = None
    cfg.classifier = "token"
    cfg.patches = ml_collections.ConfigDict({"size": (h, w, t)})
    cfg.temporal_encoding_config = ml_collections.ConfigDict(
        {"method": "3d_conv", "kernel_init_method": "central_frame_initializer"}
    )
    cfg.dropout_rate = float(hf.get("hidden_dropout_prob", 0.0))
    cfg.attention_dropout_rate = float(hf.get("attention_probs_dropout_prob", 0.0))
    cfg.stochastic_droplayer_rate = 0.0
    from vivit_jax.models import complete_model_config  # Every key, with its default.

    return complete_model_config(cfg)


def huggingface_to_params(
    state: Mapping[str, np.ndarray], num_heads: int
) -> tuple[Tree, list[str]]:
    """Converts a HF ViViT state dict to Scenic Model 1 params; returns (params, dropped keys)."""
    flat: dict[tuple[str, ...], np.ndarray] = {}
    dropped = []
    for name, value in state.items():
        value = np.asarray(value, dtype=np.float32)
        key = name[len("vivit.") :] if name.startswith("vivit.") else name
        match = _LAYER.match(name)
        if match:
            layer, part, kind = match.groups()
            if part not in _LAYER_PARTS:
                raise CheckpointError(f"Unexpected HF ViViT parameter {name!r}.")
            module = _LAYER_PARTS[part]
            path = ("Transformer", f"encoderblock_{layer}", *module)
            flat[(*path, _leaf_name(module, kind))] = _layer_param(module, kind, value, num_heads)
        elif key == "embeddings.cls_token":
            flat[("cls",)] = value
        elif key == "embeddings.position_embeddings":
            flat[("Transformer", "posembed_input", "pos_embedding")] = value
        elif key == "embeddings.patch_embeddings.projection.weight":
            flat[("embedding", "kernel")] = value.transpose(2, 3, 4, 1, 0)
        elif key == "embeddings.patch_embeddings.projection.bias":
            flat[("embedding", "bias")] = value
        elif key in ("layernorm.weight", "layernorm.bias"):
            leaf = "scale" if key.endswith("weight") else "bias"
            flat[("Transformer", "encoder_norm", leaf)] = value
        elif key in ("classifier.weight", "classifier.bias"):
            leaf = "kernel" if key.endswith("weight") else "bias"
            flat[("output_projection", leaf)] = value.T if leaf == "kernel" else value
        elif key.startswith("pooler."):
            dropped.append(name)  # VivitModel's pooler; VivitForVideoClassification has none.
        else:
            raise CheckpointError(f"Unexpected HF ViViT parameter {name!r}.")
    return trees.unflatten(flat), dropped


def _leaf_name(module: tuple[str, ...], kind: str) -> str:
    if module[0].startswith("LayerNorm"):
        return "scale" if kind == "weight" else "bias"
    return "kernel" if kind == "weight" else "bias"


def _layer_param(module: tuple[str, ...], kind: str, value: np.ndarray, heads: int):
    """One HF encoder-layer tensor -> its Scenic shape (see the table in the docstring)."""
    name = module[-1]
    if module[0].startswith("LayerNorm") or (kind == "bias" and name not in _QKV):
        return value  # LayerNorms; out and MLP biases.
    if name in ("Dense_0", "Dense_1"):
        return value.T  # torch (out, in) -> Flax (in, out)
    if name == "out":
        return value.T.reshape(heads, -1, value.shape[0])  # (D, heads*hd) -> (heads, hd, D)
    if kind == "bias":
        return value.reshape(heads, -1)  # (heads*hd,) -> (heads, hd)
    return value.T.reshape(value.shape[1], heads, -1)  # (heads*hd, D) -> (D, heads, hd)


def load_huggingface_vivit(
    directory: str | os.PathLike,
) -> tuple[ml_collections.ConfigDict, int, Tree]:
    """Reads a HF ViViT `save_pretrained` directory.

    Returns:
      (model_config, num_classes, params): `create_model(model_config, num_classes)` applied to
      `params` gives the logits of `VivitForVideoClassification` on the same video, with
      `pixel_values` `[B, T, C, H, W]` transposed to `[B, T, H, W, C]`. `num_classes` is 0 and
      `output_projection` absent for a headless `VivitModel`.

    Raises:
      FileNotFoundError: no config.json or weights.
      CheckpointError: not a ViViT, or unreadable weights.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory!r} is not a HuggingFace model directory.")
    hf = read_config(directory)
    model_config = model_config_from_huggingface(hf)
    params, dropped = huggingface_to_params(read_state_dict(directory), model_config.num_heads)
    if dropped:
        logging.info("Ignored HF parameters without a ViViT counterpart: %s", dropped)
    if not hf.get("qkv_bias", True):
        _add_zero_qkv_biases(params, model_config)
    _check_complete(params, model_config, directory)
    num_classes = (
        int(params["output_projection"]["bias"].shape[0]) if "output_projection" in params else 0
    )
    return model_config, num_classes, params


def _add_zero_qkv_biases(params: Tree, cfg: ml_collections.ConfigDict):
    hd = cfg.hidden_size // cfg.num_heads
    for name, block in params["Transformer"].items():
        if name.startswith("encoderblock_"):
            for proj in ("query", "key", "value"):
                block["MultiHeadDotProductAttention_0"][proj].setdefault(
                    "bias", np.zeros((cfg.num_heads, hd), np.float32)
                )


def _check_complete(params: Tree, cfg: ml_collections.ConfigDict, where: str):
    need = [
        ("cls",),
        ("embedding", "kernel"),
        ("embedding", "bias"),
        ("Transformer", "posembed_input", "pos_embedding"),
        ("Transformer", "encoder_norm", "scale"),
    ]
    for i in range(cfg.num_layers):
        for sub in ("query", "key", "value", "out"):
            need.append(
                (
                    "Transformer",
                    f"encoderblock_{i}",
                    "MultiHeadDotProductAttention_0",
                    sub,
                    "kernel",
                )
            )
    missing = [trees.path_str(p) for p in need if not trees.has_path(params, p)]
    if missing:
        raise CheckpointError(f"HF checkpoint {where!r} lacks parameters: {missing[:8]}.")


# --------------------------------------------------------------------------------------------
# Export.


def params_to_huggingface(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Scenic Model 1 params -> HF state dict with transformers 4.x names (Hub layout)."""
    p = trees.to_numpy_tree(params)
    state = {
        "vivit.embeddings.cls_token": p["cls"],
        "vivit.embeddings.position_embeddings": p["Transformer"]["posembed_input"]["pos_embedding"],
        "vivit.embeddings.patch_embeddings.projection.weight": p["embedding"]["kernel"].transpose(
            4, 3, 0, 1, 2
        ),
        "vivit.embeddings.patch_embeddings.projection.bias": p["embedding"]["bias"],
        "vivit.layernorm.weight": p["Transformer"]["encoder_norm"]["scale"],
        "vivit.layernorm.bias": p["Transformer"]["encoder_norm"]["bias"],
        "classifier.weight": p["output_projection"]["kernel"].T,
        "classifier.bias": p["output_projection"]["bias"],
    }
    blocks = sorted(
        (k for k in p["Transformer"] if k.startswith("encoderblock_")), key=lambda k: int(k[13:])
    )
    for i, name in enumerate(blocks):
        b, pre = p["Transformer"][name], f"vivit.encoder.layer.{i}."
        att = b["MultiHeadDotProductAttention_0"]
        for proj in ("query", "key", "value"):
            kernel = att[proj]["kernel"]
            state[f"{pre}attention.attention.{proj}.weight"] = kernel.reshape(kernel.shape[0], -1).T
            state[f"{pre}attention.attention.{proj}.bias"] = att[proj]["bias"].reshape(-1)
        out = att["out"]["kernel"]
        state[f"{pre}attention.output.dense.weight"] = out.reshape(-1, out.shape[-1]).T
        state[f"{pre}attention.output.dense.bias"] = att["out"]["bias"]
        for hf_name, (ln) in (
            ("layernorm_before", "LayerNorm_0"),
            ("layernorm_after", "LayerNorm_1"),
        ):
            state[f"{pre}{hf_name}.weight"] = b[ln]["scale"]
            state[f"{pre}{hf_name}.bias"] = b[ln]["bias"]
        for hf_name, dense in (("intermediate.dense", "Dense_0"), ("output.dense", "Dense_1")):
            state[f"{pre}{hf_name}.weight"] = b["MlpBlock_0"][dense]["kernel"].T
            state[f"{pre}{hf_name}.bias"] = b["MlpBlock_0"][dense]["bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def export_huggingface_vivit(
    params: Mapping[str, Any],
    model_config: ml_collections.ConfigDict,
    directory: str | os.PathLike,
    *,
    num_frames: int,
    image_size: int,
    id2label: Mapping[int, str] | None = None,
) -> str:
    """Writes a Model 1 ViViT as a directory `VivitForVideoClassification.from_pretrained` reads.

    Needs no torch: weights go to `model.safetensors` via `safetensors.numpy`.

    Args:
      params: Model 1 parameters (`spacetime`, `token` classifier, `3d_conv` tubelets, no
        `representation_size`) — the architecture HF implements.
      model_config: the matching `config.model`.
      directory: created if needed.
      num_frames, image_size: the input the model was built for (HF frames are square).
      id2label: optional class names.

    Returns:
      The directory.

    Raises:
      CheckpointError: the model is not expressible as a HF ViViT.
    """
    cfg = model_config
    problems = []
    if cfg.attention_config.type != "spacetime":
        problems.append(f"attention_config.type={cfg.attention_config.type!r} (need 'spacetime')")
    if cfg.classifier != "token":
        problems.append(f"classifier={cfg.classifier!r} (need 'token')")
    if cfg.get("representation_size"):
        problems.append(f"representation_size={cfg.representation_size} (HF has no pre_logits)")
    if cfg.temporal_encoding_config.method != "3d_conv":
        problems.append("temporal_encoding_config.method must be '3d_conv'")
    h, w, t = (int(x) for x in cfg.patches.size)
    if h != w:
        problems.append(f"patches.size={tuple(cfg.patches.size)} (HF needs square patches)")
    if problems:
        raise CheckpointError("Cannot export to HuggingFace ViViT: " + "; ".join(problems) + ".")
    state = params_to_huggingface(params)
    n_pos = state["vivit.embeddings.position_embeddings"].shape[1]
    expected = 1 + (num_frames // t) * (image_size // h) * (image_size // w)
    if n_pos != expected:
        raise CheckpointError(
            f"Transformer/posembed_input/pos_embedding has {n_pos} positions, but "
            f"num_frames={num_frames}, image_size={image_size} and patches {h}x{w}x{t} need "
            f"{expected}."
        )
    num_classes = state["classifier.bias"].shape[0]
    id2label = dict(id2label) if id2label else {i: f"LABEL_{i}" for i in range(num_classes)}
    hf_config = {
        "architectures": ["VivitForVideoClassification"],
        "model_type": "vivit",
        "image_size": int(image_size),
        "num_frames": int(num_frames),
        "tubelet_size": [t, h, w],
        "num_channels": 3,
        "hidden_size": int(cfg.hidden_size),
        "num_hidden_layers": int(cfg.num_layers),
        "num_attention_heads": int(cfg.num_heads),
        "intermediate_size": int(cfg.mlp_dim),
        "hidden_act": "gelu_fast",
        "hidden_dropout_prob": float(cfg.get("dropout_rate", 0.0) or 0.0),
        "attention_probs_dropout_prob": float(cfg.get("attention_dropout_rate", 0.0) or 0.0),
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "id2label": {str(k): v for k, v in id2label.items()},
        "label2id": {v: int(k) for k, v in id2label.items()},
        "torch_dtype": "float32",
    }
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    from safetensors.numpy import save_file

    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    return directory
