"""Reproduces the paper's cost figures: Table 2 (ViViT-B/16x2) and the ViViT-L rows.

    python experiments/paper_tables.py

Parameters come from `jax.eval_shape` of the real modules; GFLOPs from XLA's cost analysis of the
forward pass on one 32-frame clip, a multiply-add counted as one FLOP as in the paper. Nothing is
allocated, so this runs on a laptop CPU in under a minute. Does not import TensorFlow.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vivit_jax.models import SIZES  # noqa: E402
from vivit_jax.tools.summary import summarize  # noqa: E402


def _fe(size: str, temporal_layers: int, baseline: bool = False) -> dict:
    s = SIZES[size]
    stack = dict(num_layers=s["num_layers"], num_heads=s["num_heads"], mlp_dim=s["mlp_dim"])
    return dict(
        attention_config=dict(type="factorized_encoder", spatial_only_baseline=baseline),
        classifier="token",
        spatial_transformer=stack,
        temporal_transformer=dict(stack, num_layers=temporal_layers),
    )


def _base(size: str) -> dict:
    return dict(SIZES[size], patches=dict(size=(16, 16, 2)), representation_size=None)


M1 = dict(attention_config=dict(type="spacetime"), classifier="token")
M3 = dict(attention_config=dict(type="factorized_self_attention_block"), classifier="gap")
M4 = dict(attention_config=dict(type="factorized_dot_product_attention"), classifier="gap")

# (row, size, variant overrides, frames, resolution, paper M params or None, paper GFLOPs)
ROWS = [
    ("Table 2  Model 1 spatio-temporal", "B", M1, 32, 224, 88.9, 455.2),
    ("Table 2  Model 2 factorised encoder", "B", _fe("B", 4), 32, 224, 115.1, 284.4),
    ("Table 2  Model 3 factorised self-attn", "B", M3, 32, 224, 117.3, 372.3),
    ("Table 2  Model 4 factorised dot-prod", "B", M4, 32, 224, 88.9, 277.1),
    ("Table 2  Model 2 average-pool baseline", "B", _fe("B", 4, True), 32, 224, 86.7, 283.9),
    ("ViViT-L/16x2 Model 1, 224 px", "L", M1, 32, 224, None, 1446.0),
    ("ViViT-L/16x2 Model 1, 288 px", "L", M1, 32, 288, None, 2919.0),
    ("ViViT-L/16x2 Model 1, 320 px", "L", M1, 32, 320, None, 3992.0),
    ("ViViT-L/16x2 FE (L_t=24), 32 frames", "L", _fe("L", 24), 32, 224, None, 995.3),
    ("ViViT-L/16x2 FE (L_t=24), 128 frames", "L", _fe("L", 24), 128, 224, None, 3980.4),
]


def main() -> None:
    print(f"{'row':<42}{'params M':>10}{'paper':>8}{'GFLOPs':>10}{'paper':>9}{'ratio':>8}")
    for name, size, extra, frames, res, paper_m, paper_g in ROWS:
        s = summarize(dict(_base(size), **extra), 400, (frames, res, res, 3))
        pm = f"{paper_m:>8.1f}" if paper_m else f"{'-':>8}"
        print(
            f"{name:<42}{s.num_params / 1e6:>10.3f}{pm}{s.gflops:>10.1f}{paper_g:>9.1f}"
            f"{s.gflops / paper_g:>8.4f}"
        )


if __name__ == "__main__":
    main()
