r"""ViViT-B/16x2 Model 1 (spatio-temporal attention) on Kinetics-400, from ImageNet-21k ViT-B/16.

    python -m vivit_jax.main --config=configs/kinetics400/vivit_base_k400.py \
        --workdir=/tmp/vivit_b_k400 --config.init_from.checkpoint_path=/path/to/ViT-B_16.npz
    # Scenic's DMVR records instead of the TFDS build:
    python -m vivit_jax.main --config=configs/kinetics400/vivit_base_k400.py:dmvr \
        --config.dataset_configs.base_dir=/path/to/records --workdir=/tmp/vivit_b_k400

Data: the `kinetics400` TFDS build (`python -m vivit_jax.data.build --dataset=kinetics400
--manual_dir=...`), or with `:dmvr` Scenic's `{train,validation,test}.tfrecord@1024`. 32 frames at
stride 2, 224² crops; test = 4 clips × 3 crops. Checkpoint: `configs/common.py` VIT_CHECKPOINTS.

Should reach (paper, Table 2): 80.0% top-1 (multi-view); Scenic's released checkpoint 79.9%.
Cost: 88.95 M parameters, 455.2 GFLOPs per 32×224² view (multiply-add = 1 FLOP). 30 epochs of
batch 64 = 100,680 steps for 214,834 videos; ≈ 1.8e19 training FLOPs (3 × forward): roughly 33
GPU-hours at a sustained 150 TFLOP/s (an estimate, not measured).

Same as Scenic's `kinetics400/vivit_base_k400.py` (the base of the other Kinetics-400 configs
here), except: the ViT `.npz` loads directly (`checkpoint_format='auto'`, Scenic needed its own
format), and the multi-view test runs each video exactly once.
"""

from __future__ import annotations

import os
import sys

try:
    from configs import common
except ImportError:  # Loaded by path from another directory: make the repo root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from configs import common

ARGS = ("dmvr",)


def get_config(arg: str | None = None):
    """Returns the config; `arg` is '' (TFDS `kinetics400`) or 'dmvr' (Scenic's records)."""
    args = common.parse_args(arg, ARGS, "configs/kinetics400/vivit_base_k400.py")
    config = common.base_config()
    config.experiment_name = "vivit_base_k400"
    common.kinetics_data(config, 400, dmvr="dmvr" in args)
    common.vit_model(config, "B", "spacetime")
    common.paper_training(
        config,
        base_learning_rate=0.1,
        epochs=30,
        train_examples=common.KINETICS_SIZES[400]["train"],
    )
    common.init_from_vit(config, "B")
    return config
