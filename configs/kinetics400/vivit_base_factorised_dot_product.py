r"""Table 2 ablation: ViViT-B/16x2 Model 4 (factorised dot-product attention) on Kinetics-400.

    python -m vivit_jax.main --config=configs/kinetics400/vivit_base_factorised_dot_product.py \
        --workdir=/tmp/vivit_b_m4_k400 --config.init_from.checkpoint_path=/path/to/ViT-B_16.npz

Model 1's parameters, but in every attention layer half of the 12 heads attend over time (same
spatial position) and half over space (same frame). Global average pooling (no CLS token).
`:dmvr` reads Scenic's records; data and recipe as in `vivit_base_k400.py`, the base of this
config.

Should reach (paper, Table 2): 76.3% top-1 on Kinetics-400 (Epic-Kitchens 39.5%).
Cost: 88.95 M parameters, 277.1 GFLOPs per 32×224² view; ≈ 1.1e19 training FLOPs, roughly 20
GPU-hours at a sustained 150 TFLOP/s (an estimate, not measured). Scenic has no config for it.
"""

from __future__ import annotations

import os
import sys

try:
    from configs import common
    from configs.kinetics400 import vivit_base_k400
except ImportError:  # Loaded by path from another directory: make the repo root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from configs import common
    from configs.kinetics400 import vivit_base_k400


def get_config(arg: str | None = None):
    """Returns the config; `arg` is '' (TFDS `kinetics400`) or 'dmvr' (Scenic's records)."""
    config = vivit_base_k400.get_config(arg)
    config.experiment_name = "vivit_base_factorised_dot_product_k400"
    common.vit_model(config, "B", "factorized_dot_product_attention")
    return config
