r"""ViViT-B/16x2 Model 2 (factorised encoder, L_t = 4 temporal layers) on Kinetics-400.

    python -m vivit_jax.main --config=configs/kinetics400/vivit_base_factorised_encoder.py \
        --workdir=/tmp/vivit_b_fe_k400 --config.init_from.checkpoint_path=/path/to/ViT-B_16.npz

`:dmvr` reads Scenic's DMVR records instead of the TFDS build (see `vivit_base_k400.py`, the
base of this config: same data, recipe and ViT-B/16 initialisation; only the model differs).
The spatial encoder starts from the image ViT, the temporal encoder from scratch.

Should reach (paper, Table 2, Model 2 row): 78.8% top-1; Scenic's released checkpoint 78.4%.
Cost: 115.06 M parameters, 284.4 GFLOPs per 32×224² view. Training ≈ 1.1e19 FLOPs (3 × forward,
30 epochs): roughly 20 GPU-hours at a sustained 150 TFLOP/s (an estimate, not measured).

Differs from Scenic's `kinetics400/vivit_base_factorised_encoder.py`: base learning rate 0.1
(the paper) where Scenic's config has 0.05 (`--config.lr_configs.base_learning_rate=0.05`
reproduces it); checkpoint every 1000 steps as there.
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
    config.experiment_name = "vivit_base_factorised_encoder_k400"
    common.factorised_encoder(config, "B", temporal_layers=4)
    config.checkpoint_steps = 1000
    return config
