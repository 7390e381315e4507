"""Transformer building blocks shared by every ViViT variant.

Parameter names (`query`, `key`, `value`, `out`, `Dense_0`, `Dense_1`, `LayerNorm_0`, ...) are a
contract with Scenic checkpoints: a parameter tree written by the original loads unchanged. Do not
rename modules here without a checkpoint converter.

All blocks accept any number of leading batch dimensions: the token axis is always -2 and the
feature axis -1. The factorised encoder uses this to run the spatial encoder over `[B, T, N, D]`
(frames act as batch) with stochastic depth drawn per video, as the original's `jax.vmap` did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

Dtype = Any
Initializer = Callable[..., jax.Array]

# `einsum` reproduces the original's `flax.linen.dot_product_attention` numerics; `fused` calls
# `jax.nn.dot_product_attention`: cuDNN's flash attention on an NVIDIA GPU for 16-bit inputs (it
# never stores the [L, L] attention matrix), XLA's attention elsewhere (see `fused_attention`).
ATTENTION_IMPLEMENTATIONS = ("einsum", "fused")


def _flatten_batch(x: jax.Array, keep: int) -> tuple[jax.Array, tuple[int, ...]]:
    """Folds all but the last `keep` axes into one batch axis."""
    lead = x.shape[:-keep]
    return x.reshape((-1,) + x.shape[-keep:]), lead


def einsum_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
) -> jax.Array:
    """Softmax attention over axis -3 of `[..., L, heads, head_dim]` inputs.

    Same arithmetic as `flax.linen.dot_product_attention` with `broadcast_dropout=False` (the
    original's setting): the query is scaled before the logits, softmax runs in float32, and
    dropout masks each attention weight independently.
    """
    dtype = query.dtype
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
    if not deterministic and dropout_rate > 0.0:
        keep_prob = 1.0 - dropout_rate
        keep = jax.random.bernoulli(dropout_rng, keep_prob, weights.shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    return jnp.einsum("...hqk,...khd->...qhd", weights, value)


def fused_backend(dtype) -> str:
    """The `jax.nn.dot_product_attention` implementation `fused` asks for first.

    'cudnn' (flash attention) when JAX's default backend is a GPU and the compute dtype is 16-bit
    (cuDNN's kernel takes bfloat16/float16 only); 'xla' otherwise. JAX's own default
    (`implementation=None`) is always XLA's, which materialises the attention matrix.
    """
    if jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "xla"


_warned_fallback: set[str] = set()


def even_length_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, implementation: str = "cudnn"
) -> jax.Array:
    """`jax.nn.dot_product_attention` on `[B, L, heads, head_dim]`, run at an even length.

    JAX's cuDNN training path takes even sequence lengths only (it always passes a bias
    operand, and cuDNN needs even lengths with a bias), and ViViT's are odd whenever there is a
    class token (3137, 197, 17). An odd length is padded by one zero token, hidden from every
    query as a key by a padding mask; its own query row is computed like any other (finite) and
    dropped, so it adds nothing to the gradients.
    """
    length = q.shape[1]
    if length % 2 == 0:
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
    q, k, v = (jnp.pad(t, ((0, 0), (0, 1), (0, 0), (0, 0))) for t in (q, k, v))
    out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        key_value_seq_lengths=jnp.full(q.shape[:1], length, jnp.int32),
        implementation=implementation,
    )
    return out[:, :length]


def fused_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """`jax.nn.dot_product_attention` over axis -3, for any number of leading batch axes.

    Asks for cuDNN's flash attention where `fused_backend` picks it. JAX checks cuDNN's limits
    (head dim a multiple of 8 and at most 128, or 256 on Hopper; cuDNN present) while tracing
    and raises; then this falls back to XLA's implementation, with one warning per reason.
    """
    q, lead = _flatten_batch(query, 3)
    k, _ = _flatten_batch(key, 3)
    v, _ = _flatten_batch(value, 3)
    out = None
    if fused_backend(q.dtype) == "cudnn":
        try:
            out = even_length_attention(q, k, v)
        except (NotImplementedError, RuntimeError) as e:
            if str(e) not in _warned_fallback:
                _warned_fallback.add(str(e))
                logging.warning(
                    "attention_implementation='fused': cuDNN flash attention is unavailable for "
                    "q %s %s (%s); using XLA's attention, which stores the attention matrix.",
                    q.shape,
                    q.dtype,
                    e,
                )
    if out is None:
        out = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    return out.reshape(lead + out.shape[-3:])


def attend(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    implementation: str,
    dropout_rate: float,
    dropout_rng: jax.Array | None,
    deterministic: bool,
) -> jax.Array:
    """Dispatches to the configured attention implementation.

    The fused kernel has no attention dropout, so a training step with attention dropout falls
    back to the einsum path (same result in distribution).
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"model.attention_implementation={implementation!r} is not one of "
            f"{ATTENTION_IMPLEMENTATIONS}."
        )
    needs_dropout = not deterministic and dropout_rate > 0.0
    if implementation == "fused" and not needs_dropout:
        return fused_attention(query, key, value)
    return einsum_attention(
        query,
        key,
        value,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        deterministic=deterministic,
    )


class MultiHeadDotProductAttention(nn.Module):
    """Multi-head self-attention with the parameter layout of `flax.linen.MultiHeadDotProductAttention`.

    Attributes:
      num_heads: Number of attention heads; must divide the feature size.
      dropout_rate: Dropout on the attention weights.
      dtype: Compute dtype (parameters stay float32).
      kernel_init: Initialiser of the q/k/v/out kernels (xavier-uniform as the original).
      implementation: 'einsum' (original numerics) or 'fused' (`jax.nn.dot_product_attention`).
      attention_fn: Optional replacement of the attention core, called as
        `attention_fn(q, k, v, dropout_rate=, dropout_rng=, deterministic=, implementation=)` on
        `[..., L, heads, head_dim]` projections (used by Model 4).
    """

    num_heads: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.xavier_uniform()
    implementation: str = "einsum"
    attention_fn: Callable[..., jax.Array] | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        features = x.shape[-1]
        if features % self.num_heads:
            raise ValueError(
                f"hidden size {features} is not divisible by num_heads={self.num_heads}."
            )
        head_dim = features // self.num_heads
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            features=(self.num_heads, head_dim),
            axis=-1,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name=name,
        )
        query, key, value = dense("query")(x), dense("key")(x), dense("value")(x)
        needs_rng = not deterministic and self.dropout_rate > 0.0
        kwargs = dict(
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if needs_rng else None,
            deterministic=deterministic,
            implementation=self.implementation,
        )
        core = self.attention_fn or attend
        out = core(query, key, value, **kwargs)
        return nn.DenseGeneral(
            features=features,
            axis=(-2, -1),
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name="out",
        )(out)


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
        dense = lambda features: nn.Dense(  # noqa: E731
            features,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )
        y = dense(self.mlp_dim)(x)
        y = nn.gelu(y)
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


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: `x + attn(LN(x))`, then `x + mlp(LN(x))`.

    Attributes:
      mlp_dim: MLP hidden width.
      num_heads: Attention heads.
      dropout_rate: Dropout after attention and in the MLP.
      attention_dropout_rate: Dropout on attention weights.
      droplayer_p: Stochastic-depth probability of this block.
      dtype: Compute dtype.
      attention_implementation: See `MultiHeadDotProductAttention.implementation`.
      attention_fn: Optional attention core (Model 4's factorised dot-product attention).
    """

    mlp_dim: int
    num_heads: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    droplayer_p: float = 0.0
    dtype: Dtype = jnp.float32
    attention_implementation: str = "einsum"
    attention_fn: Callable[..., jax.Array] | None = None

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
        x = nn.LayerNorm(dtype=self.dtype)(inputs)
        x = MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.attention_dropout_rate,
            dtype=self.dtype,
            implementation=self.attention_implementation,
            attention_fn=self.attention_fn,
        )(x, deterministic=deterministic)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        x = drop_path(self, x, self.droplayer_p, deterministic) + inputs

        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype)(
            y, deterministic=deterministic
        )
        return drop_path(self, y, self.droplayer_p, deterministic) + x
