"""The ViViT model zoo (Arnab et al., ICCV 2021): `create_model(config.model, num_classes)`."""

from vivit_jax.models.attention import Attention
from vivit_jax.models.config import (
    SIZES,
    VARIANTS,
    complete_model_config,
    default_model_config,
    validate_input_shape,
)
from vivit_jax.models.vivit import SpaceTimeViViT, Stack, ViViT, create_model

__all__ = [
    "SIZES",
    "VARIANTS",
    "Attention",
    "SpaceTimeViViT",
    "Stack",
    "ViViT",
    "complete_model_config",
    "create_model",
    "default_model_config",
    "validate_input_shape",
]
