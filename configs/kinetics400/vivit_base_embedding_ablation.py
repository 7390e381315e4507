r"""Table 1 ablation: how ViViT-B Model 1 embeds the video, on Kinetics-400.

    python -m vivit_jax.main \
        --config=configs/kinetics400/vivit_base_embedding_ablation.py:filter_inflation \
        --workdir=/tmp/vivit_b_k400_inflation --config.init_from.checkpoint_path=/path/to/ViT-B_16.npz

Arguments (after a colon, comma-separated; exactly one embedding, plus `dmvr` optionally):
  central_frame            16×16×2 tubelets, the ViT patch kernel in the central frame, zeros
                           elsewhere. The paper's choice: 79.2% (this is `vivit_base_k400.py`).
  filter_inflation         16×16×2 tubelets, the ViT kernel replicated over time and divided by 2
                           (`average_frame_initializer`): 77.6%.
  random_init              16×16×2 tubelets randomly initialised (`restore_input_embedding=False`,
                           `kernel_init_method=None`; the rest of the ViT is loaded): 73.2%.
  uniform_frame_sampling   16 of the 32 frames, evenly spaced, each cut into 16×16 patches with
                           the ViT kernel unchanged: 78.5%. 16 frames give the same 3,136 tokens
                           as the tubelets (the paper does not say n_t; our choice).
  dmvr                     Scenic's DMVR records instead of the TFDS build.
Accuracies: paper, Table 1 (top-1, Kinetics-400). Data and recipe as in `vivit_base_k400.py`.

Cost: 88.95 M parameters and 455.2 GFLOPs per 32×224² view for the tubelets; 88.36 M and 453.4
GFLOPs for frame sampling. Training ≈ 1.8e19 FLOPs each, roughly 33 GPU-hours at a sustained 150
TFLOP/s (an estimate, not measured). Scenic has no config for these.
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

EMBEDDINGS = ("central_frame", "filter_inflation", "random_init", "uniform_frame_sampling")


def get_config(arg: str | None = None):
    """Returns the config; `arg` names one embedding of EMBEDDINGS, optionally with ',dmvr'."""
    args = common.parse_args(
        arg, EMBEDDINGS + ("dmvr",), "configs/kinetics400/vivit_base_embedding_ablation.py"
    )
    chosen = args & set(EMBEDDINGS)
    if len(chosen) != 1:
        raise ValueError(
            "configs/kinetics400/vivit_base_embedding_ablation.py needs exactly one of "
            f"{', '.join(EMBEDDINGS)} after the colon, e.g. ':filter_inflation'; got {arg!r}."
        )
    (embedding,) = chosen
    config = vivit_base_k400.get_config("dmvr" if "dmvr" in args else None)
    config.experiment_name = f"vivit_base_k400_{embedding}"
    tec = config.model.temporal_encoding_config
    if embedding == "filter_inflation":
        tec.kernel_init_method = "average_frame_initializer"
    elif embedding == "random_init":
        config.init_from.restore_input_embedding = False
        tec.kernel_init_method = None  # The model's default random 3D kernel.
    elif embedding == "uniform_frame_sampling":
        tec.method = "temporal_sampling"
        tec.n_sampled_frames = 16
        tec.kernel_init_method = None
        config.model.patches.size = (16, 16)
    return config
