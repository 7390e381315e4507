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
import numpy as np
from absl import logging

from vivit_jax.models import cpu_attention

Dtype = Any
Initializer = Callable[..., jax.Array]

# `einsum` reproduces the original's `flax.linen.dot_product_attention` numerics; `fused` never
# stores the [L, L] attention matrix where it can: cuDNN's flash attention on an NVIDIA GPU for
# 16-bit inputs, the compiled `cpu_attention` kernel on a CPU (float32; else
# `head_blocked_attention`), XLA's attention elsewhere (`fused_attention`).
ATTENTION_IMPLEMENTATIONS = ("einsum", "fused")


def _flatten_batch(x: jax.Array, keep: int) -> tuple[jax.Array, tuple[int, ...]]:
    """Folds all but the last `keep` axes into one batch axis."""
    lead = x.shape[:-keep]
    return x.reshape((-1,) + x.shape[-keep:]), lead


# Width multiple of the input `linear` extends with a ones column on a CPU (see there).
_ONES_COLUMN_ALIGN = 16


def _with_ones_column(x: jax.Array) -> jax.Array:
    """`[T, K]` → `[T, K']`: `x`, a column of ones, then zeros up to a multiple of 16 columns."""
    rows, cols = x.shape
    pad = -(cols + 1) % _ONES_COLUMN_ALIGN
    return jnp.concatenate(
        [x, jnp.ones((rows, 1), x.dtype), jnp.zeros((rows, pad), x.dtype)], axis=-1
    )


def _linear_plain(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    return x @ kernel + bias


# The same forward pass, with the bias gradient taken from the kernel gradient's matmul.
_linear_bias_in_matmul = jax.custom_vjp(_linear_plain)


def _linear_bias_in_matmul_fwd(x, kernel, bias):
    return _linear_plain(x, kernel, bias), (x, kernel)


def _linear_bias_in_matmul_bwd(residuals, grad):
    x, kernel = residuals
    # Row K of [x, 1, 0...]^T @ grad is grad's column sum: the bias gradient.
    both = _with_ones_column(x).T @ grad
    return grad @ kernel.T, both[: x.shape[1]], both[x.shape[1]]


_linear_bias_in_matmul.defvjp(_linear_bias_in_matmul_fwd, _linear_bias_in_matmul_bwd)


def linear(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """`x`'s trailing axes (as many as `kernel` has before `bias`'s shape) times `kernel`, plus
    `bias`: `[..., *K] x [*K, *F] + [*F]` → `[..., *F]`, as `nn.DenseGeneral` computes it.

    On a CPU the gradient differs in how, not in what: the bias gradient (a column sum of the
    output gradient over every token) comes out of the kernel-gradient matmul, whose input gets
    a column of ones (`[x, 1]^T @ g = [x^T g; sum(g)]`), instead of a separate reduction.
    XLA:CPU runs such column sums as trees of `reduce-window`s that stride down the columns of a
    `[tokens, features]` array (up to ~6 ms per MLP layer of the (b) benchmark); the ones column
    costs a copy of `x` and a matmul row instead. The (b) training step was 5-15% shorter in
    A/B runs (1797 → 1530, 2174 → 1915 ms; experiments/README.md). The ones column is padded
    with zeros to 16 columns (8 and 32 were slower): at width K + 1, XLA fused the
    concatenation into the matmul's transposed copy of `x`, which then ran ~10x slower.
    Written by hand: no library or XLA option changes how XLA:CPU reduces.
    """
    n_in = kernel.ndim - bias.ndim
    if x.shape[x.ndim - n_in :] != kernel.shape[:n_in]:
        raise ValueError(
            f"linear: input shape {x.shape} does not end with the kernel's input shape "
            f"{kernel.shape[:n_in]} (kernel {kernel.shape}, bias {bias.shape})."
        )
    lead = x.shape[: x.ndim - n_in]
    x2 = x.reshape((-1, int(np.prod(kernel.shape[:n_in]))))
    kernel2 = kernel.reshape((x2.shape[1], bias.size))
    fn = _linear_bias_in_matmul if bias_gradient_in_matmul() else _linear_plain
    return fn(x2, kernel2, bias.reshape(-1)).reshape(lead + bias.shape)


# `linear`'s bias gradient: None = in the kernel-gradient matmul on a CPU, a reduction elsewhere;
# True / False force one (the benchmarks count model FLOPs with False, the textbook program).
BIAS_GRADIENT_IN_MATMUL: bool | None = None


def bias_gradient_in_matmul() -> bool:
    """Whether `linear` computes bias gradients in the kernel-gradient matmul (read at trace
    time): `BIAS_GRADIENT_IN_MATMUL`, or where it is None, whether JAX's backend is a CPU."""
    if BIAS_GRADIENT_IN_MATMUL is not None:
        return BIAS_GRADIENT_IN_MATMUL
    return jax.default_backend() == "cpu"


class Dense(nn.Module):
    """`nn.Dense` / `nn.DenseGeneral` over trailing axes, computed by `linear`.

    The same parameters as Flax's modules (`kernel` of shape `in_shape + features`, `bias` of
    shape `features`, initialised on the flattened `(prod(in_shape), prod(features))` shape as
    `nn.DenseGeneral` does), so checkpoints and initial values are unchanged.

    Attributes:
      features: Output width, or output shape (e.g. `(heads, head_dim)`).
      axis: The trailing input axes contracted: -1, or e.g. `(-2, -1)`.
      dtype: Compute dtype (parameters stay float32); None: the inputs' and parameters'
        promoted dtype, as Flax's modules do.
      kernel_init: Kernel initialiser.
      bias_init: Bias initialiser.
    """

    features: int | tuple[int, ...]
    axis: int | tuple[int, ...] = -1
    dtype: Dtype | None = None
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        axes = sorted(a % x.ndim for a in axes)
        if axes != list(range(x.ndim - len(axes), x.ndim)):
            raise ValueError(f"Dense contracts trailing axes only, got axis={self.axis}.")
        in_shape = x.shape[x.ndim - len(axes) :]
        flat = (int(np.prod(in_shape)), int(np.prod(features)))
        kernel = self.param(
            "kernel",
            lambda rng, shape: self.kernel_init(rng, flat, jnp.float32).reshape(shape),
            in_shape + features,
        )
        bias = self.param(
            "bias",
            lambda rng, shape: self.bias_init(rng, flat[1:], jnp.float32).reshape(shape),
            features,
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return linear(x, kernel, bias)


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

    Same arithmetic as `flax.linen.dot_product_attention` with `broadcast_dropout=False` (the
    original's setting): the query is scaled before the logits, softmax runs in float32, and
    dropout masks each attention weight independently. `key_length`: only the first
    `key_length` keys are attended to (the rest are padding); None: all.
    """
    dtype = query.dtype
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key).astype(jnp.float32)
    if key_length is not None and key_length < key.shape[-3]:
        logits = jnp.where(jnp.arange(key.shape[-3]) < key_length, logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
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

# Score-matrix elements one step of `head_blocked_attention` holds: 1.5 M float32 (6 MB), so a
# step's scores, probabilities and their gradients stay in a CPU's cache (2 heads at L = 785).
# Measured on the 2-core CI machine (experiments/README.md): 2 heads per step beat 1 and 4+.
HEAD_BLOCK_SCORES = 3 << 19


def _head_group(batch: int, heads: int, length: int) -> int:
    """Heads per step (each with the whole batch): as many as `HEAD_BLOCK_SCORES` allows, split
    evenly; at least one, however large the batch."""
    per_step = max(1, min(heads, HEAD_BLOCK_SCORES // (batch * length * length)))
    steps = -(-heads // per_step)
    return -(-heads // steps)


def _head_rows(x: jax.Array, group: int) -> jax.Array:
    """`[N, L, H, D]` → `[steps, group, N, L, D]`: heads are looped over, zero-padded to whole
    steps. The batch axis stays an axis of its own, so a batch sharded over devices stays
    sharded (folding it into the looped axis made XLA gather every device's batch)."""
    heads = x.shape[2]
    rows = jnp.transpose(x, (2, 0, 1, 3))
    steps = -(-heads // group)
    rows = jnp.pad(rows, ((0, steps * group - heads),) + ((0, 0),) * 3)
    return rows.reshape(steps, group, *rows.shape[1:])


def _from_head_rows(rows: jax.Array, heads: int) -> jax.Array:
    """Inverse of `_head_rows`: `[steps, group, N, L, D]` → `[N, L, H, D]`."""
    rows = rows.reshape(-1, *rows.shape[2:])[:heads]
    return jnp.transpose(rows, (1, 2, 0, 3))


def _matmul(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """`einsum` in `b`'s dtype, accumulated in float32."""
    return jnp.einsum(spec, a.astype(b.dtype), b, preferred_element_type=jnp.float32)


def _scores(a: jax.Array, b: jax.Array) -> jax.Array:
    return _matmul("...id,...jd->...ij", a, b)


def _blocked_forward(q, k, v):
    """Softmax attention, a few heads at a time: outputs and row log-sum-exps, as head rows."""
    n, length, heads, dim = q.shape
    group = _head_group(n, heads, length)
    scaled = q / jnp.sqrt(dim).astype(q.dtype)
    rows = tuple(_head_rows(t, group) for t in (scaled, k, v))

    def step(qkv):
        q, k, v = qkv
        s = _scores(q, k)
        m = jnp.max(s, axis=-1, keepdims=True)
        p = jnp.exp(s - m)
        total = jnp.sum(p, axis=-1, keepdims=True)
        o = _matmul("...qk,...kd->...qd", p, v)
        return (o / total).astype(v.dtype), (m + jnp.log(total))[..., 0]

    out, lse = jax.lax.map(step, rows)
    return out, lse, rows


@jax.custom_vjp
def head_blocked_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """Softmax attention over `[N, L, heads, head_dim]`, a few heads at a time (CPU fused path).

    Same arithmetic as `einsum_attention` (query scaled first, float32 softmax), but XLA:CPU
    runs it as a loop over groups of heads (each with the whole batch) whose `[L, L]` scores fit
    in cache, and the backward pass recomputes each group's probabilities from the stored row
    log-sum-exps (flash attention's scheme) instead of keeping the `[N, heads, L, L]` matrix. On
    the 2-core CI machine, `[2, 785, 12, 64]` inputs, forward + backward took ~154 ms against
    einsum's ~235 (torch's CPU flash attention: 110-142; experiments/README.md). Written with
    `lax.map` because XLA:CPU has no fused attention kernel.
    """
    return _blocked_fwd(query, key, value)[0]


def _blocked_fwd(query, key, value):
    heads = query.shape[2]
    out, lse, (q, k, v) = _blocked_forward(query, key, value)
    return _from_head_rows(out, heads), (q, k, v, out, lse)


def _blocked_bwd(residuals, d_out):
    q, k, v, out, lse = residuals
    heads = d_out.shape[2]
    d_out = _head_rows(d_out, q.shape[1])
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)

    def step(args):
        # Keys on rows (the transposed problem) so that dK and dV are plain matmuls.
        q, k, v, do, lse, delta = args
        p_t = jnp.exp(_scores(k, q) - lse[..., None, :])
        ds_t = p_t * (_scores(v, do) - delta[..., None, :])
        dv = _matmul("...kq,...qd->...kd", p_t, do).astype(v.dtype)
        dk = _matmul("...kq,...qd->...kd", ds_t, q).astype(k.dtype)
        dq = _matmul("...kq,...kd->...qd", ds_t, k).astype(q.dtype)
        return dq, dk, dv

    dq, dk, dv = jax.lax.map(step, (q, k, v, d_out, lse, delta))
    dq = dq / jnp.sqrt(q.shape[-1]).astype(dq.dtype)
    return tuple(_from_head_rows(t, heads) for t in (dq, dk, dv))


head_blocked_attention.defvjp(_blocked_fwd, _blocked_bwd)


def even_length_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    implementation: str = "cudnn",
    key_length: int | None = None,
) -> jax.Array:
    """`jax.nn.dot_product_attention` on `[B, L, heads, head_dim]`, run at an even length.

    JAX's cuDNN training path takes even sequence lengths only (it always passes a bias
    operand, and cuDNN needs even lengths with a bias), and ViViT's are odd whenever there is a
    class token (3137, 197, 17). An odd length is padded by one zero token, hidden from every
    query as a key by a padding mask; its own query row is computed like any other (finite) and
    dropped, so it adds nothing to the gradients. `Encoder` pads its tokens once instead, for all
    its blocks, and passes `key_length` (the unpadded length): then nothing is padded here.
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


def fused_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, key_length: int | None = None
) -> jax.Array:
    """`jax.nn.dot_product_attention` over axis -3, for any number of leading batch axes.

    Asks for cuDNN's flash attention where `fused_backend` picks it. JAX checks cuDNN's limits
    (head dim a multiple of 8 and at most 128, or 256 on Hopper; cuDNN present) while tracing
    and raises; then this falls back to XLA's implementation, with one warning per reason. On a
    CPU it runs the compiled kernel `cpu_attention.attention` (float32, where it can be built),
    else `head_blocked_attention` (or the einsum path where all scores fit one block).
    Fewer queries than keys (a class-token-only last block) take the einsum path everywhere.
    `key_length`: only the first `key_length` keys count (the tokens after them are padding).
    """
    q, lead = _flatten_batch(query, 3)
    k, _ = _flatten_batch(key, 3)
    v, _ = _flatten_batch(value, 3)
    out = None
    if key_length is not None and key_length >= k.shape[1]:
        key_length = None
    if q.shape[1] != k.shape[1]:
        # A few queries against all keys (the class token in an encoder's last block): the
        # scores are [.., heads, n, L], small on any device, so the einsum path is enough.
        out = einsum_attention(q, k, v, key_length=key_length)
    elif fused_backend(q.dtype) == "cudnn":
        try:
            out = even_length_attention(q, k, v, key_length=key_length)
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
    if out is None and key_length is not None:  # padded tokens: XLA's attention masks them
        out = even_length_attention(q, k, v, "xla", key_length)
    if out is None and jax.default_backend() == "cpu":
        n, length, heads, _ = q.shape
        if cpu_attention.available(q.dtype):
            out = cpu_attention.attention(q, k, v)
        elif _head_group(n, heads, length) < heads:
            out = head_blocked_attention(q, k, v)
        else:  # Every score matrix fits one step: nothing to block, and einsum is as fast.
            out = einsum_attention(q, k, v)
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
    key_length: int | None = None,
) -> jax.Array:
    """Dispatches to the configured attention implementation.

    The fused kernel has no attention dropout, so a training step with attention dropout falls
    back to the einsum path (same result in distribution). `key_length`: see `fused_attention`.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"model.attention_implementation={implementation!r} is not one of "
            f"{ATTENTION_IMPLEMENTATIONS}."
        )
    needs_dropout = not deterministic and dropout_rate > 0.0
    if implementation == "fused" and not needs_dropout:
        return fused_attention(query, key, value, key_length=key_length)
    return einsum_attention(
        query,
        key,
        value,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        deterministic=deterministic,
        key_length=key_length,
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
    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool,
        query_tokens: int | None = None,
        key_length: int | None = None,
    ) -> jax.Array:
        """Attends from every token of `[..., L, D]` `x`, or from its first `query_tokens` only
        (to all `L` keys), giving `[..., query_tokens, D]`. With `key_length`, the tokens after
        the first `key_length` are padding: no query attends to them."""
        features = x.shape[-1]
        if features % self.num_heads:
            raise ValueError(
                f"hidden size {features} is not divisible by num_heads={self.num_heads}."
            )
        head_dim = features // self.num_heads
        dense = lambda name: Dense(  # noqa: E731
            features=(self.num_heads, head_dim),
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name=name,
        )
        queries = x if query_tokens is None else x[..., :query_tokens, :]
        query, key, value = dense("query")(queries), dense("key")(x), dense("value")(x)
        needs_rng = not deterministic and self.dropout_rate > 0.0
        kwargs = dict(
            dropout_rate=self.dropout_rate,
            dropout_rng=self.make_rng("dropout") if needs_rng else None,
            deterministic=deterministic,
            implementation=self.implementation,
        )
        if key_length is not None:
            if self.attention_fn is not None:
                raise ValueError("key_length needs the standard attention core (Models 1 and 2).")
            kwargs["key_length"] = key_length
        core = self.attention_fn or attend
        out = core(query, key, value, **kwargs)
        return Dense(
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
        dense = lambda features: Dense(  # noqa: E731
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
      output_tokens: Compute the outputs of the first `output_tokens` tokens only (all tokens
        still serve as keys and values): `[..., L, D]` → `[..., output_tokens, D]`. The same
        numbers as slicing the full block's output, for a fraction of its work; an encoder's last
        block uses it when only the class token is read. `None`: every token.
      key_length: The tokens after the first `key_length` are padding (`Encoder` pads an odd
        token count once for cuDNN): no token attends to them. `None`: no padding.
    """

    mlp_dim: int
    num_heads: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    droplayer_p: float = 0.0
    dtype: Dtype = jnp.float32
    attention_implementation: str = "einsum"
    attention_fn: Callable[..., jax.Array] | None = None
    output_tokens: int | None = None
    key_length: int | None = None

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
        if self.output_tokens is not None and self.attention_fn is not None:
            raise ValueError("output_tokens needs the standard attention core (Models 1 and 2).")
        x = nn.LayerNorm(dtype=self.dtype)(inputs)
        x = MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.attention_dropout_rate,
            dtype=self.dtype,
            implementation=self.attention_implementation,
            attention_fn=self.attention_fn,
        )(
            x,
            deterministic=deterministic,
            query_tokens=self.output_tokens,
            key_length=self.key_length,
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
