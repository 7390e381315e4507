"""Softmax attention a few heads at a time, in XLA: the CPU backend's fallback where its
compiled kernel cannot be built (no C++ compiler, or another dtype)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Score-matrix elements one step of `head_blocked_attention` holds: 1.5 M float32 (6 MB), so a
# step's scores, probabilities and their gradients stay in a CPU's cache (2 heads at L = 785).
# On a 2-core CPU 2 heads per step beat 1 and 4+ (experiments/README.md).
HEAD_BLOCK_SCORES = 3 << 19


def head_group(batch: int, heads: int, length: int) -> int:
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
    group = head_group(n, heads, length)
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
    log-sum-exps (flash attention's scheme) instead of keeping the `[N, heads, L, L]` matrix: on
    a 2-core CPU about 1.5x faster than einsum at `[2, 785, 12, 64]` (experiments/README.md).
    Written with `lax.map` because XLA:CPU has no fused attention kernel; the compiled kernel
    (`attention.py`) replaces it where it can be built.
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
