r"""ViViT-L/16x2 Model 2 (factorised encoder, L_t = 24 as released) on Kinetics-600.

    python -m vivit_jax.main --config=configs/kinetics600/vivit_large_factorised_encoder.py \
        --workdir=/tmp/vivit_l_fe_k600 --config.init_from.checkpoint_path=/path/to/ViT-L_16.npz
    # Scenic's DMVR records instead of the TFDS build (`kinetics600`):
    python -m vivit_jax.main --config=configs/kinetics600/vivit_large_factorised_encoder.py:dmvr \
        --config.dataset_configs.base_dir=/path/to/records --workdir=/tmp/vivit_l_fe_k600

The Kinetics-400 L-FE config (`configs/kinetics400/vivit_large_factorised_encoder.py`) on 600
classes: data `python -m vivit_jax.data.build --dataset=kinetics600 --manual_dir=...`, 32 frames
at stride 2, 224² crops, 4 clips × 3 crops at test; ImageNet-21k ViT-L/16; 30 epochs.

Should reach (paper, Table 6): 82.9% top-1; Scenic's released checkpoint 81.6%.
Cost: 607.03 M parameters, 995.2 GFLOPs per 32×224² view. 30 epochs of 363,213 videos ≈ 6.5e19
training FLOPs: roughly 120 GPU-hours at a sustained 150 TFLOP/s (an estimate, not measured).

Differs from Scenic's `kinetics600/vivit_large_factorised_encoder.py`: base learning rate 0.1
(the paper) where Scenic's config has 0.05 (`--config.lr_configs.base_learning_rate=0.05`
reproduces it); its warmup is a float number of steps (5675.0), here the integer 5675.
"""

from __future__ import annotations

import os
import sys

try:
    from configs import common
    from configs.kinetics400 import vivit_large_factorised_encoder as k400_large
except ImportError:  # Loaded by path from another directory: make the repo root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from configs import common
    from configs.kinetics400 import vivit_large_factorised_encoder as k400_large


def get_config(arg: str | None = None):
    """Returns the config; `arg` is '' (TFDS `kinetics600`) or 'dmvr' (Scenic's records)."""
    args = common.parse_args(
        arg, ("dmvr",), "configs/kinetics600/vivit_large_factorised_encoder.py"
    )
    config = k400_large.get_config(arg)
    config.experiment_name = "vivit_large_factorised_encoder_k600"
    common.kinetics_data(config, 600, dmvr="dmvr" in args)
    common.paper_training(
        config,
        base_learning_rate=0.1,
        epochs=30,
        train_examples=common.KINETICS_SIZES[600]["train"],
    )
    config.log_summary_steps = 100
    return config
