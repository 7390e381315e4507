r"""Table 2 ablation: the average-pool baseline, ViViT-B/16x2 Model 2 without a temporal encoder.

    python -m vivit_jax.main --config=configs/kinetics400/vivit_base_average_pool_baseline.py \
        --workdir=/tmp/vivit_b_avgpool_k400 --config.init_from.checkpoint_path=/path/to/ViT-B_16.npz

The spatial encoder (a ViT-B/16 on each 2-frame tubelet slice) gives one CLS vector per time
step; they are averaged instead of passing a temporal transformer
(`attention_config.spatial_only_baseline=True`). `:dmvr` reads Scenic's records; data and
recipe as in `vivit_base_k400.py`, via `vivit_base_factorised_encoder.py`.

Should reach (paper, Table 2): 75.8% top-1 on Kinetics-400 (Epic-Kitchens 38.8%).
Cost: 86.70 M parameters, 283.9 GFLOPs per 32×224² view; ≈ 1.1e19 training FLOPs, roughly 20
GPU-hours at a sustained 150 TFLOP/s (an estimate, not measured). Scenic has no config for it
(its model has the switch).
"""

from __future__ import annotations

import os
import sys

try:
    from configs.kinetics400 import vivit_base_factorised_encoder
except ImportError:  # Loaded by path from another directory: make the repo root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from configs.kinetics400 import vivit_base_factorised_encoder


def get_config(arg: str | None = None):
    """Returns the config; `arg` is '' (TFDS `kinetics400`) or 'dmvr' (Scenic's records)."""
    config = vivit_base_factorised_encoder.get_config(arg)
    config.experiment_name = "vivit_base_average_pool_baseline_k400"
    config.model.attention_config.spatial_only_baseline = True
    return config
