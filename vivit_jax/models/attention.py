"""Dot-product attention: the reference path, the fused path, and how a model picks one.

`model.attention_implementation` names the path:
  'einsum'  the original's numerics (`flax.linen.dot_product_attention` with per-weight dropout):
            the `[L, L]` attention matrix is stored.
  'fused'   `jax.nn.dot_product_attention`, which never stores the matrix where it can: cuDNN's
            flash attention on an NVIDIA GPU with 16-bit compute, XLA's attention elsewhere,
            or a fused core handed to the model (`Attention.fused_fn`, e.g. a CPU kernel).

Which kernel runs is decided once, when the model is built (`Attention.resolve`), and travels as
a typed module field; nothing here asks which device it runs on while tracing.

cuDNN's training path takes even sequence lengths only, and ViViT's are odd whenever there is a
class token (3137, 197, 17). An encoder therefore pads its tokens by one (`Attention.pad_to_even`)
and passes `key_length`, the unpadded length: the padding token is masked as a key for every
query, and its own output row is dropped.

`weights_sink(fn)` lets a reader see the attention weights: inside it, the einsum path hands
each softmax `[..., heads, q, k]` (before dropout) to `fn`, e.g. to `module.sow` them
(`vivit_jax.explain`). Outside it nothing is computed or stored beyond the attention itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from vivit_jax.models.config import ATTENTION_IMPLEMENTATIONS

Dtype = Any
# A fused core for full self-attention: `[N, L, heads, head_dim]` q, k, v -> the same shape.
FusedFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

EINSUM, CUDNN, XLA = "einsum", "cudnn", "xla"

# Receives the einsum path's attention weights while `weights_sink` is active; None: nobody.
_SINK: contextvars.ContextVar[Callable[[jax.Array], None] | None] = contextvars.ContextVar(
    "vivit_jax_attention_weights_sink", default=None
)


@contextlib.contextmanager
def weights_sink(fn: Callable[[jax.Array], None]) -> Iterator[None]:
    """Within the block, every einsum attention calls `fn(weights)` with its softmax weights
    `[..., heads, queries, keys]` (in the compute dtype, before dropout), in call order.

    Tracing-time only: `fn` sees tracers when the model runs under `jax.jit`, so it must use
    them inside the same trace (`flax.linen.Module.sow` does). The fused path has no weights to
    give: run the model with `attention_implementation='einsum'` to read them.
    """
    token = _SINK.set(fn)
    try:
        yield
    finally:
        _SINK.reset(token)


@dataclasses.dataclass(frozen=True)
class Attention:
    """How a model computes attention.

    Attributes:
      kind: 'einsum' (reference), 'cudnn' (flash attention) or 'xla' (`jax.nn`'s XLA path).
      fused_fn: Replaces XLA's fused path for full self-attention without padding (e.g. the
        CPU backend's compiled kernel); None: `jax.nn.dot_product_attention`.
    """

    kind: str = EINSUM
    fused_fn: FusedFn | None = None

    @classmethod
    def resolve(
        cls, implementation: str, dtype, platform: str, fused_fn: FusedFn | None = None
    ) -> Attention:
        """The attention of `model.attention_implementation` for `dtype` on `platform`
        ('cpu', 'gpu', 'tpu').

        Raises:
          ValueError: naming the key, for an unknown implementation.
        """
        if implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"model.attention_implementation={implementation!r} is not one of "
                f"{ATTENTION_IMPLEMENTATIONS}."
            )
        if implementation == EINSUM:
            return cls(EINSUM)
        # cuDNN's flash kernel takes bfloat16/float16 only.
        if platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
            return cls(CUDNN)
        return cls(XLA, fused_fn)

    @property
    def pad_to_even(self) -> bool:
        """Whether an encoder pads an odd token count by one for this attention."""
        return self.kind == CUDNN


def einsum_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    key_length: int | None = None,
) -> jax.Array:
    """Softmax attention over axis -3 of `[..., L, heads, head_dim]` inputs.

    The arithmetic of `flax.linen.dot_product_attention` with `broadcast_dropout=False` (the
    original's setting): the query is scaled before the logits, the softmax runs in float32 and
    dropout masks each attention weight independently. `key_length`: only the first
    `key_length` keys are attended to (the rest are padding); None: all.
    """
    dtype = query.dtype
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32)
    if key_length is not None and key_length < key.shape[-3]:
        logits = jnp.where(jnp.arange(key.shape[-3]) < key_length, logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    sink = _SINK.get()
    if sink is not None:
        sink(weights)
    if not deterministic and dropout_rate > 0.0:
        keep_prob = 1.0 - dropout_rate
        keep = jax.random.bernoulli(dropout_rng, keep_prob, weights.shape)
        weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))
    return jnp.einsum("...hqk,...khd->...qhd", weights, value)


def even_length_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    implementation: str = CUDNN,
    key_length: int | None = None,
) -> jax.Array:
    """`jax.nn.dot_product_attention` on `[B, L, heads, head_dim]`, run at an even length.

    JAX's cuDNN training path always passes a bias operand, and cuDNN needs even lengths with
    one. An odd length is padded by one zero token, hidden from every query as a key by a
    padding mask; its own query row is computed like any other (finite) and dropped, so it adds
    nothing to the gradients. Encoders pad once for all their blocks and pass `key_length`
    (the unpadded length): then nothing is padded here.
    """
    length = q.shape[1]
    if length % 2 == 0:
        lengths = None if key_length is None else jnp.full(q.shape[:1], key_length, jnp.int32)
        return jax.nn.dot_product_attention(
            q, k, v, key_value_seq_lengths=lengths, implementation=implementation
        )
    q, k, v = (jnp.pad(t, ((0, 0), (0, 1), (0, 0), (0, 0))) for t in (q, k, v))
    key_length = length if key_length is None else key_length
    return even_length_attention(q, k, v, implementation, key_length)[:, :length]


_warned_fallback: set[str] = set()


def fused_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    attention: Attention,
    key_length: int | None = None,
) -> jax.Array:
    """The fused path over axis -3, for any number of leading batch axes.

    cuDNN's limits (head dim a multiple of 8 and at most 128, or 256 on Hopper) are checked by
    JAX while tracing; where they fail this falls back to XLA's attention, with one warning per
    reason. Fewer queries than keys (a class-token-only last block) take the einsum path: those
    scores are `[.., heads, n, L]`, small on any device.
    """
    lead = query.shape[:-3]
    q, k, v = (t.reshape((-1,) + t.shape[-3:]) for t in (query, key, value))
    if key_length is not None and key_length >= k.shape[1]:
        key_length = None
    out = None
    if q.shape[1] != k.shape[1]:
        out = einsum_attention(q, k, v, key_length=key_length)
    elif attention.kind == CUDNN:
        try:
            out = even_length_attention(q, k, v, CUDNN, key_length)
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
    if out is None and key_length is not None:  # Padded tokens: XLA's attention masks them.
        out = even_length_attention(q, k, v, XLA, key_length)
    if out is None and attention.fused_fn is not None:
        out = attention.fused_fn(q, k, v)
    if out is None:
        out = jax.nn.dot_product_attention(q, k, v, implementation=XLA)
    return out.reshape(lead + out.shape[-3:])


def attend(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    attention: Attention,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
    deterministic: bool = True,
    key_length: int | None = None,
) -> jax.Array:
    """Attention over axis -3 by `attention`'s path.

    The fused kernels have no attention dropout, so a training step with attention dropout
    takes the einsum path (the same result in distribution).
    """
    needs_dropout = not deterministic and dropout_rate > 0.0
    if attention.kind != EINSUM and not needs_dropout:
        return fused_attention(query, key, value, attention=attention, key_length=key_length)
    return einsum_attention(
        query,
        key,
        value,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        deterministic=deterministic,
        key_length=key_length,
    )


def attention_fn(attention: Attention, key_length: int | None = None):
    """The `attention_fn` of a `flax.linen.MultiHeadDotProductAttention` computing `attend`."""

    def fn(query, key, value, dropout_rng=None, dropout_rate=0.0, deterministic=True):
        return attend(
            query,
            key,
            value,
            attention=attention,
            dropout_rate=dropout_rate,
            dropout_rng=dropout_rng,
            deterministic=deterministic,
            key_length=key_length,
        )

    return fn
