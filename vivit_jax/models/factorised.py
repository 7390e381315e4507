"""Model 3 (factorised self-attention block) and Model 4 (factorised dot-product attention).

Both work on token grids `[B, T, S, D]` (T temporal positions, S = nh·nw spatial positions).
Parameter names follow Scenic (`LayerNorm_space`, `MultiHeadDotProductAttention_time`, ...).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_jax.models.attention import Attention, Dtype, attend, attention_fn
from vivit_jax.models.layers import MlpBlock, drop_path, self_attention

ATTENTION_ORDERS = ("space_time", "time_space")


def factorized_dot_product_attention(attention: Attention):
    """Model 4's attention core, on `[B, T, S, heads, head_dim]` projections.

    The first half of the heads attend over time (tokens at the same spatial position), the
    second half over space (tokens of the same frame); outputs are concatenated time-heads first,
    as the original does before the shared output projection. Returns the `attention_fn` of a
    `flax.linen.MultiHeadDotProductAttention`.
    """

    def fn(query, key, value, dropout_rng=None, dropout_rate=0.0, deterministic=True):
        half = query.shape[-2] // 2
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        kw = dict(attention=attention, dropout_rate=dropout_rate, deterministic=deterministic)

        def over_time(t):  # [B, T, S, h, d] -> [B, S, T, h, d]: attention axis -3 is time.
            return jnp.swapaxes(t[..., :half, :], 1, 2)

        time_out = attend(
            over_time(query), over_time(key), over_time(value), dropout_rng=rngs[0], **kw
        )
        space_out = attend(
            query[..., half:, :],
            key[..., half:, :],
            value[..., half:, :],
            dropout_rng=rngs[1],
            **kw,
        )
        return jnp.concatenate([jnp.swapaxes(time_out, 1, 2), space_out], axis=-2)

    return fn


class FactorizedSelfAttentionBlock(nn.Module):
    """Model 3 block: spatial and temporal self-attention, each pre-LN with a residual, then MLP.

    Attributes:
      mlp_dim: MLP hidden width.
      num_heads: Heads of each attention.
      attention_order: 'space_time' (the paper) or 'time_space' (Scenic's default).
      dropout_rate: Dropout after each attention and in the MLP.
      attention_dropout_rate: Dropout on attention weights.
      droplayer_p: Stochastic depth per residual branch. The original ignores it for Model 3;
        here it applies with the same per-example semantics as the other variants.
      dtype: Compute dtype.
      attention: Which attention kernel (`models.attention.Attention`).
    """

    mlp_dim: int
    num_heads: int
    attention_order: str = "time_space"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    droplayer_p: float = 0.0
    dtype: Dtype = jnp.float32
    attention: Attention = Attention()

    def _attend_axis(self, x: jax.Array, axis: str, deterministic: bool) -> jax.Array:
        # Put the attended axis at -2: [B, T, S, D] for space, [B, S, T, D] for time.
        inputs = jnp.swapaxes(x, 1, 2) if axis == "time" else x
        y = nn.LayerNorm(dtype=self.dtype, name=f"LayerNorm_{axis}")(inputs)
        y = self_attention(
            self.num_heads,
            self.attention_dropout_rate,
            self.dtype,
            attention_fn(self.attention),
            name=f"MultiHeadDotProductAttention_{axis}",
        )(y, deterministic=deterministic)
        y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
        y = drop_path(self, y, self.droplayer_p, deterministic) + inputs
        return jnp.swapaxes(y, 1, 2) if axis == "time" else y

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if self.attention_order not in ATTENTION_ORDERS:
            raise ValueError(
                f"model.attention_config.attention_order={self.attention_order!r} is not one of "
                f"{ATTENTION_ORDERS}."
            )
        for axis in self.attention_order.split("_"):
            x = self._attend_axis(x, axis, deterministic)
        y = nn.LayerNorm(dtype=self.dtype, name="LayerNorm_mlp")(x)
        y = MlpBlock(
            mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype, name="MlpBlock"
        )(y, deterministic=deterministic)
        return drop_path(self, y, self.droplayer_p, deterministic) + x
