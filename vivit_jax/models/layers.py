"""Transformer building blocks shared by every ViViT variant: the MLP, stochastic depth and the
pre-LN encoder block.

Parameter names (`MultiHeadDotProductAttention_0/{query,key,value,out}`, `MlpBlock_0/Dense_0`,
`LayerNorm_0`, ...) are a contract with Scenic checkpoints: a parameter tree written by the
original loads unchanged. They are those of Flax's own modules, which these blocks use.

All blocks accept any number of leading batch dimensions: the token axis is always -2 and the
feature axis -1. The factorised encoder uses this to run the spatial encoder over `[B, T, N, D]`
(frames act as batch) with stochastic depth drawn per video, as the original's `jax.vmap` did.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_jax.models.attention import Attention, Dtype, attention_fn


class MlpBlock(nn.Module):
    """Transformer MLP: Dense → GELU (tanh approximation) → dropout → Dense → dropout.

    Attributes:
      mlp_dim: Hidden width.
      dropout_rate: Dropout after each Dense.
      dtype: Compute dtype.
    """

    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        def dense(features):
            return nn.Dense(
                features,
                dtype=self.dtype,
                kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=1e-6),
            )

        y = nn.gelu(dense(self.mlp_dim)(x))
        y = nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)
        y = dense(x.shape[-1])(y)
        return nn.Dropout(rate=self.dropout_rate)(y, deterministic=deterministic)


def drop_path(module: nn.Module, branch: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Stochastic depth with the original's semantics.

    Each example (leading axis) drops the whole residual branch with probability `rate`; kept
    branches are *not* rescaled (Scenic's choice, unlike timm). Returns the masked branch.
    """
    if deterministic or not rate:
        return branch
    shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)
    drop = jax.random.bernoulli(module.make_rng("dropout"), rate, shape)
    return branch * (1.0 - drop.astype(branch.dtype))


def self_attention(
    num_heads: int,
    dropout_rate: float,
    dtype: Dtype,
    core: Callable,
    name: str | None = None,
) -> nn.MultiHeadDotProductAttention:
    """Flax's multi-head attention with the original's settings (xavier-uniform kernels,
    per-weight dropout) and `core` as its attention function."""
    return nn.MultiHeadDotProductAttention(
        num_heads=num_heads,
        dtype=dtype,
        dropout_rate=dropout_rate,
        broadcast_dropout=False,
        kernel_init=nn.initializers.xavier_uniform(),
        attention_fn=core,
        name=name,
    )


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))`.

    Attributes:
      mlp_dim: MLP hidden width.
      num_heads: Attention heads.
      dropout_rate: Dropout after attention and in the MLP.
      attention_dropout_rate: Dropout on attention weights.
      droplayer_p: Stochastic-depth probability of this block.
      dtype: Compute dtype.
      attention: Which attention kernel (`models.attention.Attention`).
      attention_core: `Attention -> attention_fn`, replacing the standard attention core
        (Model 4's factorised dot-product attention); None: full self-attention.
      output_tokens: Compute the outputs of the first `output_tokens` tokens only (all tokens
        still serve as keys and values): `[..., L, D]` → `[..., output_tokens, D]`. The same
        numbers as slicing the full block's output, for a fraction of its work; an encoder's last
        block uses it when only the class token is read. `None`: every token.
      key_length: The tokens after the first `key_length` are padding (an encoder pads an odd
        token count once for cuDNN): no token attends to them. `None`: no padding.
    """

    mlp_dim: int
    num_heads: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    droplayer_p: float = 0.0
    dtype: Dtype = jnp.float32
    attention: Attention = Attention()
    attention_core: Callable[[Attention], Callable] | None = None
    output_tokens: int | None = None
    key_length: int | None = None

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
        if self.attention_core is not None and (self.output_tokens or self.key_length):
            raise ValueError("output_tokens and key_length need full self-attention.")
        if self.attention_core is None:
            core = attention_fn(self.attention, self.key_length)
        else:
            core = self.attention_core(self.attention)
        x = nn.LayerNorm(dtype=self.dtype)(inputs)
        queries = x if self.output_tokens is None else x[..., : self.output_tokens, :]
        x = self_attention(self.num_heads, self.attention_dropout_rate, self.dtype, core)(
            queries, x, deterministic=deterministic
        )
        if self.output_tokens is not None:
            inputs = inputs[..., : self.output_tokens, :]
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        x = drop_path(self, x, self.droplayer_p, deterministic) + inputs

        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype)(
            y, deterministic=deterministic
        )
        return drop_path(self, y, self.droplayer_p, deterministic) + x
