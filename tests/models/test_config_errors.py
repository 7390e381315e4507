"""Every bad model config raises a ValueError naming the key."""

import jax
import jax.numpy as jnp
import pytest

from tests.models.helpers import TINY_INPUT, tiny_config
from vivit_jax.models import create_model


def _run(cfg, shape=TINY_INPUT):
    model = create_model(cfg, num_classes=3)
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


@pytest.mark.parametrize(
    "cfg,match",
    [
        (tiny_config(attention_config=dict(type="divided")), r"model\.attention_config\.type"),
        (tiny_config(classifier="cls"), r"model\.classifier"),
        (
            tiny_config("factorized_self_attention_block", "token"),
            r"classifier='token'.*factorized_self_attention_block",
        ),
        (
            tiny_config("factorized_dot_product_attention", "token"),
            r"classifier='token'.*factorized_dot_product_attention",
        ),
        (
            tiny_config("factorized_dot_product_attention", num_heads=1, hidden_size=32),
            r"model\.num_heads=1 must be even",
        ),
        (tiny_config(num_heads=5), r"model\.hidden_size=32 is not divisible by model\.num_heads=5"),
        (
            tiny_config(temporal_encoding_config=dict(method="conv3d")),
            r"temporal_encoding_config\.method",
        ),
        (
            tiny_config(temporal_encoding_config=dict(kernel_init_method="middle")),
            r"kernel_init_method",
        ),
        (
            tiny_config(temporal_encoding_config=dict(method="temporal_sampling")),
            r"n_sampled_frames",
        ),
        (tiny_config(dropout_rate=1.5), r"model\.dropout_rate"),
        (tiny_config(hiden_size=32), r"Unknown config key 'model\.hiden_size'"),
        (
            tiny_config(attention_config=dict(attention_ordr="space_time")),
            r"model\.attention_config\.attention_ordr",
        ),
        (
            tiny_config(
                "factorized_self_attention_block",
                attention_config=dict(attention_order="spacetime"),
            ),
            r"attention_order",
        ),
        (tiny_config(num_layers=0), r"model\.num_layers must be a positive integer"),
    ],
)
def test_bad_config_raises_naming_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        _run(cfg)


def test_factorised_encoder_heads_checked_per_stack():
    cfg = tiny_config("factorized_encoder")
    cfg.temporal_transformer.num_heads = 3
    with pytest.raises(ValueError, match=r"model\.temporal_transformer\.num_heads=3"):
        _run(cfg)


def test_frames_not_divisible_by_tubelet():
    with pytest.raises(ValueError, match=r"7 frames \(dataset_configs\.num_frames\).*t=2"):
        _run(tiny_config(), (1, 7, 16, 16, 3))


def test_crop_not_divisible_by_patch():
    with pytest.raises(ValueError, match=r"crop size 18x18.*patch size 4x4"):
        _run(tiny_config(), (1, 8, 18, 18, 3))


def test_bad_dtype_and_classes():
    with pytest.raises(ValueError, match="model_dtype_str"):
        create_model(tiny_config(), 3, dtype="float8")
    with pytest.raises(ValueError, match="num_classes"):
        create_model(tiny_config(), 0)
