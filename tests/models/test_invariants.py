"""What each attention may mix: perturb one token, see which outputs move."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import TINY_INPUT, randomize, tiny_config
from vivit_jax.models import create_model
from vivit_jax.models.attention import Attention
from vivit_jax.models.factorised import (
    FactorizedSelfAttentionBlock,
    factorized_dot_product_attention,
)
from vivit_jax.models.layers import EncoderBlock

B, T, S, D = 2, 4, 6, 16  # grid of 4 frames x 6 spatial positions
T0, S0 = 1, 2  # the perturbed token


def _changed(f, x):
    """Boolean [T, S] map of outputs (example 0) that move when token (T0, S0) is perturbed."""
    y0 = f(x)
    # A random direction: a constant shift would be invisible to LayerNorm.
    y1 = f(x.at[0, T0, S0].add(jax.random.normal(jax.random.key(9), x.shape[-1:])))
    return np.asarray(jnp.abs(y1 - y0)[0].max(-1) > 0)


def _only(axis):
    mask = np.zeros((T, S), bool)
    if axis == "space":
        mask[T0, :] = True
    else:
        mask[:, S0] = True
    return mask


@pytest.mark.parametrize("keep", ["space", "time"])
def test_model3_each_attention_mixes_only_its_axis(keep):
    block = FactorizedSelfAttentionBlock(mlp_dim=32, num_heads=2, attention_order="space_time")
    x = jax.random.normal(jax.random.key(0), (B, T, S, D))
    params = randomize(block.init(jax.random.key(1), x, True)["params"], jax.random.key(2))
    # Silence the other attention exactly: its residual branch then adds zero.
    other = "time" if keep == "space" else "space"
    att = dict(params[f"MultiHeadDotProductAttention_{other}"])
    att["out"] = jax.tree.map(jnp.zeros_like, att["out"])
    params = {**params, f"MultiHeadDotProductAttention_{other}": att}
    changed = _changed(lambda v: block.apply({"params": params}, v, True), x)
    np.testing.assert_array_equal(changed, _only(keep))


@pytest.mark.parametrize("half", ["time", "space"])
def test_model4_heads_attend_over_their_axis(half):
    q, k, v = (
        jax.random.normal(key, (B, T, S, 4, 8)) for key in jax.random.split(jax.random.key(0), 3)
    )

    def heads(kv):
        out = factorized_dot_product_attention(Attention())(q, kv, kv)
        return out[..., :2, :] if half == "time" else out[..., 2:, :]

    f = lambda kv: heads(kv).reshape(B, T, S, -1)  # noqa: E731
    np.testing.assert_array_equal(_changed(f, k), _only(half))


def test_model4_block_mixes_within_frame_and_position_only():
    """One Model 4 block reaches the perturbed token's frame and its spatial position, nothing else."""
    block = EncoderBlock(mlp_dim=32, num_heads=2, attention_core=factorized_dot_product_attention)
    x = jax.random.normal(jax.random.key(0), (B, T, S, D))
    params = randomize(block.init(jax.random.key(1), x, True)["params"], jax.random.key(2))
    changed = _changed(lambda v: block.apply({"params": params}, v, True), x)
    np.testing.assert_array_equal(changed, _only("space") | _only("time"))


def test_model1_block_mixes_everything():
    block = EncoderBlock(mlp_dim=32, num_heads=2)
    x = jax.random.normal(jax.random.key(0), (B, T * S, D))
    params = randomize(block.init(jax.random.key(1), x, True)["params"], jax.random.key(2))
    changed = _changed(
        lambda v: block.apply({"params": params}, v.reshape(B, T * S, D), True).reshape(B, T, S, D),
        x.reshape(B, T, S, D),
    )
    assert changed.all()


def test_model2_spatial_encoder_treats_frames_independently():
    cfg = tiny_config("factorized_encoder", "token")
    model = create_model(cfg, num_classes=3)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = randomize(
        model.init(jax.random.key(1), video, train=False)["params"], jax.random.key(2)
    )

    def spatial_out(v):
        _, state = model.apply(
            {"params": params},
            v,
            train=False,
            capture_intermediates=True,
            mutable=["intermediates"],
        )
        return state["intermediates"]["SpatialTransformer"]["__call__"][0]  # [B, nt, 1+S, D]

    base = spatial_out(video)
    bump = jax.random.normal(jax.random.key(9), video.shape[2:])
    moved = spatial_out(video.at[0, 2:4].add(bump))  # frames 2-3 = tubelet time index 1
    diff = np.asarray(jnp.abs(moved - base).max(axis=(2, 3)))
    np.testing.assert_array_equal(diff[0] > 1e-6, [False, True, False, False])
    assert not (diff[1] > 0).any()  # other videos untouched
    # ... while the full model does see the change.
    logits = lambda v: model.apply({"params": params}, v, train=False)  # noqa: E731
    assert np.abs(logits(video) - logits(video.at[0, 2:4].add(bump))).max() > 1e-4
