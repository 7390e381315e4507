"""Output shapes for every variant x tokeniser x classifier."""

import itertools

import jax
import jax.numpy as jnp
import pytest

from tests.models.helpers import TINY_INPUT, tiny_config
from vivit_jax.models import create_model

KINDS = [
    "spacetime",
    "factorized_encoder",
    "factorized_self_attention_block",
    "factorized_dot_product_attention",
]
TOKENIZERS = {
    "3d_conv": dict(
        temporal_encoding_config=dict(
            method="3d_conv", kernel_init_method="central_frame_initializer"
        )
    ),
    "temporal_sampling": dict(
        temporal_encoding_config=dict(method="temporal_sampling", n_sampled_frames=4),
        patches=dict(size=(4, 4)),
    ),
}
CLASSIFIERS = ["token", "gap", "gmp", "gsp"]
CASES = [
    c
    for c in itertools.product(KINDS, TOKENIZERS, CLASSIFIERS)
    if not (c[2] == "token" and c[0].startswith("factorized_") and c[0] != "factorized_encoder")
]


@pytest.mark.parametrize("kind,tokenizer,classifier", CASES)
def test_logit_shape(kind, tokenizer, classifier):
    cfg = tiny_config(kind, classifier, representation_size=16, **TOKENIZERS[tokenizer])
    model = create_model(cfg, num_classes=11)

    def run():
        x = jnp.zeros(TINY_INPUT)
        params = model.init(jax.random.key(0), x, train=False)["params"]
        return params, model.apply({"params": params}, x, train=False)

    params, logits = jax.eval_shape(run)  # shapes only: no compilation, no allocation
    assert logits.shape == (2, 11)
    assert params["pre_logits"]["kernel"].shape == (32, 16)
    assert params["output_projection"]["kernel"].shape == (16, 11)
    assert ("cls" in params or "cls_SpatialTransformer" in params) == (classifier == "token")


def test_central_frame_initializer_zeroes_time_not_width():
    from vivit_jax.models.tokenizers import average_frame_initializer, central_frame_initializer

    k = central_frame_initializer()(jax.random.key(0), (3, 4, 4, 3, 8))
    assert float(jnp.abs(k[0]).max()) == 0.0 and float(jnp.abs(k[2]).max()) == 0.0
    # Every width column of the central frame is alive (the original zeroed width slices).
    assert bool((jnp.abs(k[1]).sum(axis=(0, 2, 3)) > 0).all())
    a = average_frame_initializer()(jax.random.key(0), (3, 4, 4, 3, 8))
    assert bool((a[0] == a[1]).all() and (a[1] == a[2]).all())
