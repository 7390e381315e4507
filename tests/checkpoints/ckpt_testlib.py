"""Shared pieces of the checkpoint tests: a reference image ViT and writers for each format.

The reference ViT follows the original vision_transformer / Scenic ViT exactly (pre-LN blocks,
LayerNorm eps 1e-6, tanh GELU, position embedding added after the CLS concat, final
`encoder_norm`, head on CLS or GAP) and uses Scenic's Linen parameter names.
"""

from __future__ import annotations

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization

from vivit_jax.checkpoints import trees

HIDDEN, HEADS, MLP, PATCH = 32, 2, 64, 8


class _Block(nn.Module):
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, name="MultiHeadDotProductAttention_0"
        )(y, y)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_1")(x)
        mlp = _Mlp(self.mlp_dim, name="MlpBlock_0")
        return x + mlp(y)


class _Mlp(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim, name="Dense_0")(x))
        return nn.Dense(x.shape[-1], name="Dense_1")(y)


class ImageViT(nn.Module):
    """Reference image ViT. `prelogits=True` returns the representation before the head."""

    num_classes: int = 10
    num_layers: int = 2
    classifier: str = "token"
    representation_size: int | None = None

    @nn.compact
    def __call__(self, image, prelogits: bool = False):
        x = nn.Conv(
            HIDDEN, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID", name="embedding"
        )(image)
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)
        if self.classifier == "token":
            cls = self.param("cls", nn.initializers.normal(0.02), (1, 1, d))
            x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)), x], axis=1)
        x = _EncoderWithPos(self.num_layers, MLP, HEADS, name="Transformer")(x)
        x = x[:, 0] if self.classifier == "token" else x.mean(axis=1)
        if self.representation_size:
            x = jnp.tanh(nn.Dense(self.representation_size, name="pre_logits")(x))
        if prelogits:
            return x
        return nn.Dense(self.num_classes, name="output_projection")(x)


class _PosEmb(nn.Module):
    @nn.compact
    def __call__(self, x):
        pe = self.param("pos_embedding", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        return x + pe


class _EncoderWithPos(nn.Module):
    num_layers: int
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x):
        x = _PosEmb(name="posembed_input")(x)
        for i in range(self.num_layers):
            x = _Block(self.mlp_dim, self.num_heads, name=f"encoderblock_{i}")(x)
        return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)


def random_params(init_fn, *args, seed=0, scale=0.1):
    """Random parameters shaped like `init_fn(*args)['params']`, without running the init.

    `jax.eval_shape` only traces; a real init compiles a program per initialiser, which takes
    seconds per model on a busy CPU. LayerNorm scales and biases are random too, so tests see
    every parameter.
    """
    shapes = jax.eval_shape(init_fn, *args)["params"]
    rng = np.random.default_rng(seed)
    flat = {
        p: (scale * rng.standard_normal(s.shape)).astype(np.float32)
        for p, s in trees.flatten(shapes).items()
    }
    return trees.unflatten(flat)


def random_image_vit(seed=0, image_size=32, **kw):
    """(module, params) with every parameter random."""
    model = ImageViT(**kw)
    image = jnp.zeros((1, image_size, image_size, 3))
    return model, random_params(model.init, jax.random.PRNGKey(0), image, seed=seed)


# ------------------------------------------------------------------------------------------
# Writers, one per format.

_PRE_LINEN = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}


def save_vit_npz(path, params):
    """google-research/vision_transformer layout: flat '/' keys, pre-Linen names, `head`."""
    flat = {}
    for p, v in trees.flatten(params).items():
        p = tuple(_PRE_LINEN.get(k, k) if k not in ("Dense_0", "Dense_1") else k for k in p)
        if p[0] == "output_projection":
            p = ("head", *p[1:])
        flat["/".join(p)] = np.asarray(v)
    np.savez(path, **flat)


def big_vision_flat(params, prefix="opt/target/", scan=False):
    """big_vision layout: `pos_embedding` at the top, added before the CLS token is prepended."""
    params = trees.to_numpy_tree(params)
    enc = params["Transformer"]
    pe = enc.pop("posembed_input")["pos_embedding"]
    if "cls" in params:
        params["cls"] = params["cls"] + pe[:, :1]
        pe = pe[:, 1:]
    params["pos_embedding"] = pe
    if "output_projection" in params:  # A SigLIP image tower has none.
        params["head"] = params.pop("output_projection")
    if scan:
        names = sorted(k for k in enc if k.startswith("encoderblock_"))
        blocks = [trees.flatten(enc.pop(n)) for n in names]
        enc["encoderblock"] = trees.unflatten(
            {p: np.stack([b[p] for b in blocks]) for p in blocks[0]}
        )
    return {prefix + "/".join(p): v for p, v in trees.flatten(params).items()}


def save_big_vision_npz(path, params, prefix="opt/target/", scan=False):
    flat = big_vision_flat(params, prefix, scan)
    if prefix.startswith("opt/"):
        flat["opt/state/step"] = np.asarray(7)
        flat["extra/accum_train_time"] = np.asarray(1.5)
    np.savez(path, **flat)


def siglip_image_tower(seed=0):
    """A tiny SigLIP-like image tower in Scenic's layout: GAP ViT with a big_vision `MAPHead_0`
    (attention pooling on a learnt probe) and no head."""
    _, params = random_image_vit(seed=seed, classifier="gap")
    params = trees.to_numpy_tree(params)
    del params["output_projection"]
    rng = np.random.default_rng(seed + 100)
    hd = HIDDEN // HEADS
    shapes = {
        "probe": (1, 1, HIDDEN),
        "LayerNorm_0/scale": (HIDDEN,),
        "LayerNorm_0/bias": (HIDDEN,),
        "MlpBlock_0/Dense_0/kernel": (HIDDEN, MLP),
        "MlpBlock_0/Dense_0/bias": (MLP,),
        "MlpBlock_0/Dense_1/kernel": (MLP, HIDDEN),
        "MlpBlock_0/Dense_1/bias": (HIDDEN,),
        "MultiHeadDotProductAttention_0/out/kernel": (HEADS, hd, HIDDEN),
        "MultiHeadDotProductAttention_0/out/bias": (HIDDEN,),
    }
    for name in ("query", "key", "value"):
        shapes[f"MultiHeadDotProductAttention_0/{name}/kernel"] = (HIDDEN, HEADS, hd)
        shapes[f"MultiHeadDotProductAttention_0/{name}/bias"] = (HEADS, hd)
    params["MAPHead_0"] = trees.unflatten_slash_keys(
        {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    )
    return params


def save_two_tower_npz(path, image_params, scan=False):
    """big_vision two-tower (SigLIP / LiT) `.npz`: image tower `params/img/` in big_vision's
    layout, a text tower `params/txt/`, temperature `params/t` and bias `params/b`."""
    flat = big_vision_flat(image_params, prefix="params/img/", scan=scan)
    rng = np.random.default_rng(7)
    text = {
        "Embed_0/embedding": (50, HIDDEN),
        "pos_embedding": (1, 16, HIDDEN),
        "Encoder_0/encoderblock_0/MlpBlock_0/Dense_0/kernel": (HIDDEN, MLP),
        "Encoder_0/encoder_norm/scale": (HIDDEN,),
        "head/kernel": (HIDDEN, HIDDEN),
    }
    flat.update({f"params/txt/{k}": rng.standard_normal(v) for k, v in text.items()})
    flat["params/t"] = np.asarray([2.3], np.float32)
    flat["params/b"] = np.asarray([-10.0], np.float32)
    np.savez(path, **flat)


def save_scenic_msgpack(path, params, layout="optimizer"):
    """Scenic layout: {'optimizer': {'target': params, 'state': ...}} or {'params': ...}."""
    params = trees.to_numpy_tree(params)
    if layout == "optimizer":
        momentum = jax.tree.map(np.zeros_like, params)
        state = {
            "optimizer": {
                "target": params,
                "state": {"step": np.asarray(3), "param_states": momentum},
            },
            "global_step": np.asarray(3),
            "accum_train_time": 1.0,
        }
    else:
        state = {
            "params": params,
            "opt_state": {"mu": jax.tree.map(np.zeros_like, params)},
            "global_step": np.asarray(3),
        }
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(state))


def assert_trees_equal(a, b, atol=0.0):
    fa, fb = trees.flatten(a), trees.flatten(b)
    assert set(fa) == set(fb), sorted(set(fa) ^ set(fb))
    for p in fa:
        np.testing.assert_allclose(
            np.asarray(fa[p]), np.asarray(fb[p]), atol=atol, rtol=0, err_msg=trees.path_str(p)
        )


# ------------------------------------------------------------------------------------------
# ViViT helpers (the project's model zoo).


def vivit_config(variant="spacetime", classifier="token", layers=1, t=2, **over):
    cfg = ml_collections.ConfigDict()
    cfg.attention_config = ml_collections.ConfigDict({"type": variant})
    cfg.hidden_size, cfg.num_heads, cfg.mlp_dim, cfg.num_layers = HIDDEN, HEADS, MLP, layers
    cfg.spatial_transformer = ml_collections.ConfigDict(
        {"num_layers": layers, "num_heads": HEADS, "mlp_dim": MLP}
    )
    cfg.temporal_transformer = ml_collections.ConfigDict(
        {"num_layers": 1, "num_heads": HEADS, "mlp_dim": MLP}
    )
    cfg.classifier = classifier
    cfg.patches = ml_collections.ConfigDict({"size": (PATCH, PATCH, t)})
    cfg.temporal_encoding_config = ml_collections.ConfigDict(
        {"method": "3d_conv", "kernel_init_method": "central_frame_initializer"}
    )
    cfg.dropout_rate = 0.0
    cfg.attention_dropout_rate = 0.0
    for key, value in over.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        setattr(node, leaf, value)
    return cfg


def init_vivit(cfg, num_classes=5, video_shape=(1, 8, 32, 32, 3), seed=1):
    """(model, random params of the model's shapes); the head is zero as the model inits it."""
    from vivit_jax.models import create_model

    model = create_model(cfg, num_classes)
    params = random_params(
        lambda rng, x: model.init({"params": rng}, x, train=False),
        jax.random.PRNGKey(0),
        jnp.zeros(video_shape),
        seed=seed,
    )
    for leaf in params["output_projection"].values():
        leaf[...] = 0.0
    return model, params


def prelogits(cfg, params, video, num_classes=5):
    from vivit_jax.models import create_model

    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.return_prelogits = True
    model = create_model(cfg, num_classes)
    return np.asarray(model.apply({"params": params}, jnp.asarray(video), train=False))


def init_from_config(model_cfg, **init_from):
    config = ml_collections.ConfigDict()
    config.model = model_cfg
    config.init_from = ml_collections.ConfigDict(init_from)
    return config


# ------------------------------------------------------------------------------------------
# Command lines, as users run them.

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_module(module, *args, cwd, timeout=300):
    """`python -m module args` in `cwd` (so relative paths are relative to it), on CPU.

    Returns the CompletedProcess (text stdout and stderr)."""
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
