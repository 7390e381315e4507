r"""ViViT-H/14x2 Model 1 (spatio-temporal attention) on Kinetics-400, from a ViT-H/14.

    python -m vivit_jax.main --config=configs/kinetics400/vivit_huge_k400.py \
        --workdir=/tmp/vivit_h_k400 --config.init_from.checkpoint_path=/path/to/ViT-H_14.npz

`:dmvr` reads Scenic's DMVR records instead of the TFDS build (data and recipe as in
`vivit_base_k400.py`, the base of this config). 14×14×2 tubelets: 16 × 16 × 16 = 4096 tokens.

Should reach: the paper reports ViViT-H/14x2 only initialised from JFT-300M (Table 6), a
checkpoint that was never released; from the public ImageNet-21k ViT-H/14 expect less. Scenic
has no config for it; the recipe here is the paper's Kinetics one (its appendix).
Cost: 636.95 M parameters, 3980.9 GFLOPs per 32×224² view. Training ≈ 1.5e20 FLOPs: roughly
290 GPU-hours at a sustained 150 TFLOP/s (an estimate, not measured). Attention over 4096 tokens
is the memory bottleneck, so `model.remat` is on here (same numerics); for more speed add
`--config.model.attention_implementation=fused --config.model_dtype_str=bfloat16`.
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
    config.experiment_name = "vivit_huge_k400"
    common.vit_model(config, "H", "spacetime")
    config.model.patches.size = (14, 14, 2)
    config.model.remat = True
    common.init_from_vit(config, "H")
    return config
