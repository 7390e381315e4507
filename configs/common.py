"""Pieces shared by the experiment configs: imported, never copied.

Every config starts from `base_config()`: the complete default config (all keys of
`vivit_jax.config_lib.default_config()`), so any key can be overridden on the command line with
`--config.key=value`, and a misspelt key is an error naming it.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """All keys with their defaults (see `vivit_jax.config_lib`)."""
    from vivit_jax import config_lib

    return config_lib.default_config()


def cosine_schedule(
    config: ml_collections.ConfigDict, base_learning_rate: float, warmup_steps: int
) -> None:
    """The paper's schedule: constant × linear warmup × cosine decay to 0 at the last step.

    `lr_configs.steps_per_cycle` is left None, meaning the run's total number of steps.
    """
    config.lr_configs.learning_rate_schedule = "compound"
    config.lr_configs.factors = "constant * cosine_decay * linear_warmup"
    config.lr_configs.base_learning_rate = base_learning_rate
    config.lr_configs.warmup_steps = warmup_steps


def tiny_model(config: ml_collections.ConfigDict, hidden: int = 64, layers: int = 2) -> None:
    """A CPU-sized ViViT Model 1 with 4×4×2 tubelets (for the demo and tests)."""
    m = config.model
    m.attention_config.type = "spacetime"
    m.hidden_size = hidden
    m.num_heads = 4
    m.mlp_dim = 2 * hidden
    m.num_layers = layers
    m.patches.size = (4, 4, 2)
    m.classifier = "gap"
    m.dropout_rate = 0.0
    m.attention_dropout_rate = 0.0
    m.temporal_encoding_config.method = "3d_conv"
    m.temporal_encoding_config.kernel_init_method = None
