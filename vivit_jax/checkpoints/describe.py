"""What a checkpoint is: its variant, and the `config.model` its parameter shapes imply.

Users of the original only saw shapes in logs; `summary` prints what the tree means.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vivit_jax.checkpoints import inflate, trees
from vivit_jax.checkpoints.trees import CheckpointError


def infer_model_config(params: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """The `config.model` keys that a parameter tree's shapes determine.

    `attention_order`, dropout rates and (for frame sampling) `n_sampled_frames` are not stored
    in parameters and are left out.
    """
    kind = inflate.describe_checkpoint(params)
    kernel = np.shape(params["embedding"]["kernel"])
    cfg = ml_collections.ConfigDict()
    variant = inflate.SPACETIME if kind == inflate.IMAGE else kind
    cfg.attention_config = ml_collections.ConfigDict({"type": variant})
    cfg.hidden_size = int(kernel[-1])
    if len(kernel) == 5:
        cfg.patches = ml_collections.ConfigDict({"size": (kernel[1], kernel[2], kernel[0])})
        method = "3d_conv"
    else:
        cfg.patches = ml_collections.ConfigDict({"size": (kernel[0], kernel[1])})
        method = "temporal_sampling"
    cfg.temporal_encoding_config = ml_collections.ConfigDict({"method": method})
    has_cls = "cls" in params or "cls_SpatialTransformer" in params
    cfg.classifier = "token" if has_cls else "gap"
    cfg.representation_size = (
        int(params["pre_logits"]["kernel"].shape[1]) if "pre_logits" in params else None
    )
    if variant == inflate.FACT_ENCODER:
        cfg.spatial_transformer = _stack(params["SpatialTransformer"])
        if "TemporalTransformer" in params:
            cfg.temporal_transformer = _stack(params["TemporalTransformer"])
        else:
            cfg.attention_config.spatial_only_baseline = True
    else:
        for key, value in _stack(params["Transformer"]).items():
            cfg[key] = value
    return cfg


def _stack(encoder: Mapping[str, Any]) -> dict[str, int]:
    blocks = [k for k in encoder if k.startswith("encoderblock_")]
    block = encoder["encoderblock_0"]
    att = block.get("MultiHeadDotProductAttention_0") or block.get(
        "MultiHeadDotProductAttention_space"
    )
    mlp = block.get("MlpBlock_0") or block.get("MlpBlock")
    if not (att and "query" in att and mlp and "Dense_0" in mlp):
        raise CheckpointError(
            f"encoderblock_0 holds {sorted(block)}: expected an attention module "
            "(MultiHeadDotProductAttention_0 or _space, with query/) and an MLP (MlpBlock_0 or "
            "MlpBlock, with Dense_0/)."
        )
    return {
        "num_layers": len(blocks),
        "num_heads": int(att["query"]["kernel"].shape[1]),
        "mlp_dim": int(mlp["Dense_0"]["kernel"].shape[1]),
    }


def summary(path: str, params: Mapping[str, Any], fmt: str) -> str:
    cfg = infer_model_config(params)
    flat = trees.flatten(params)
    n = sum(int(np.prod(np.shape(v))) for v in flat.values())
    head = params.get("output_projection", {}).get("bias")
    lines = [
        f"checkpoint: {path}",
        f"format: {fmt}",
        f"kind: {inflate.describe_checkpoint(params)}",
        f"parameters: {n:,} in {len(flat)} arrays",
        f"classes: {'none' if head is None else head.shape[0]}",
        "config.model implied by the shapes:",
        json.dumps(cfg.to_dict(), indent=2, default=list),
    ]
    if "MAPHead_0" in params:  # SigLIP's image tower.
        lines.insert(5, "MAPHead_0: big_vision's MAP-pooling head; no ViViT has one (unused)")
    return "\n".join(lines)
