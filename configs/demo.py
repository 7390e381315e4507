r"""Demo: a small ViViT learns the motion classes of the built-in `moving_shapes` videos on CPU.

    python -m vivit_jax.data.build --dataset=moving_shapes        # ~1 min, once
    python -m vivit_jax.main --config=configs/demo.py --workdir=/tmp/vivit_demo

`moving_shapes` (see `vivit_jax/data/builders/moving_shapes.py`): 3200 / 400 / 400 videos of 16
frames of 32×32; a random shape moves in one of 4 directions at one of 2 speeds (8 classes). A
single frame says nothing about the class (chance 12.5%). The model: ViViT Model 1
(spatio-temporal attention), hidden 64, 2 layers, 4 heads, 8×8×2 tubelets (128 tokens), global
average pooling; AdamW, lr 1e-3 with warmup and cosine decay, batch 32.

Arguments (after a colon, comma-separated):
  single_frame  the control: the same model sees one frame (uniform frame sampling with
                `n_sampled_frames=1`), so it cannot see motion and should stay near chance.
  tiny          a seconds-long smoke run on `moving_shapes/tiny` (8 frames of 16×16), used by
                the test suite.

Measured with `experiments/demo_accuracy.py` (2 CPU cores shared with other jobs, JAX 0.10.2;
each command a fresh process, so times include start-up, compilation and evaluation):
  build moving_shapes 40 s + train 223 s (500 steps, ~3 steps/s) = 4.4 min end to end;
  validation top-1 100.0% (top-5 100%), already 100% at the step-250 evaluation.
  single_frame control: validation top-1 13.5% (chance 12.5%), train 51 s.
"""

from __future__ import annotations

import os
import sys

try:
    from configs import common
except ImportError:  # Loaded by path from another directory: make the repo root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import common


def get_config(arg: str | None = None):
    """Returns the demo config; `arg` is '', 'single_frame', 'tiny' or 'tiny,single_frame'."""
    args = set(filter(None, (arg or "").split(",")))
    unknown = args - {"single_frame", "tiny"}
    if unknown:
        raise ValueError(
            f"Unknown configs/demo.py argument(s) {sorted(unknown)}; known: single_frame, tiny."
        )
    config = common.base_config()
    config.experiment_name = "vivit_demo_moving_shapes"

    config.dataset_name = "moving_shapes"
    ds = config.dataset_configs
    ds.num_frames = 16
    ds.stride = 1
    ds.min_resize = 32
    ds.crop_size = 32
    ds.random_flip = False  # Left and right are different classes.
    ds.zero_centering = True

    common.tiny_model(config, hidden=64, layers=2)
    config.model.patches.size = (8, 8, 2)
    if "single_frame" in args:
        config.experiment_name += "_single_frame"
        config.model.temporal_encoding_config.method = "temporal_sampling"
        config.model.temporal_encoding_config.n_sampled_frames = 1
        config.model.patches.size = (8, 8)

    config.batch_size = 32
    config.eval_batch_size = 40
    config.optimizer = "adamw"
    config.optimizer_configs.weight_decay = 1e-4
    config.max_grad_norm = 1.0
    config.num_training_epochs = 5  # 100 steps per epoch.
    common.cosine_schedule(config, base_learning_rate=1e-3, warmup_steps=50)
    config.log_summary_steps = 25
    config.log_eval_steps = 250
    config.checkpoint_steps = 250

    if "tiny" in args:
        config.dataset_name = "moving_shapes/tiny"
        ds.num_frames = 8
        ds.min_resize = ds.crop_size = 16
        config.model.patches.size = (8, 8) if "single_frame" in args else (8, 8, 2)
        config.batch_size = 8
        config.eval_batch_size = 8
        config.num_training_epochs = None
        config.num_training_steps = 6
        config.lr_configs.warmup_steps = 2
        config.log_summary_steps = 2
        config.log_eval_steps = 6
        config.checkpoint_steps = 3
    return config
