"""The CPU backend (the `cpu` extra): a compiled attention kernel and XLA:CPU settings.

What it hands to the core (`vivit_jax.backends.Backend`):
  * `fused_attention`: the compiled kernel (`attention.py`, float32, built once per machine when
    the backend is set up), else `blocked.head_blocked_attention` (a few heads at a time in
    XLA), else einsum where every score matrix fits one block;
  * `compiler_options`: Eigen instead of YNNPACK for XLA:CPU's dots (`tuning.py`).
`setup()` also keeps glibc's freed memory for reuse in this process (`tuning.keep_freed_memory`).
The mimalloc restart (`tuning.restart_with_fast_malloc`) is a separate opt-in of the command
lines (`VIVIT_JAX_MALLOC=mimalloc`). Measured speed: experiments/README.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import logging

from vivit_jax.backends import Backend
from vivit_jax.backends.cpu import attention, blocked, tuning
from vivit_jax.models.attention import einsum_attention


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention of `[N, L, heads, head_dim]` inputs (query scaled, float32 softmax)."""
    n, length, heads, _ = q.shape
    if attention.available(q.dtype):
        return attention.attention(q, k, v)
    if blocked.head_group(n, heads, length) < heads:
        return blocked.head_blocked_attention(q, k, v)
    # Every score matrix fits one step: nothing to block, and einsum is as fast.
    return einsum_attention(q, k, v)


def setup(build_kernel: bool = True) -> Backend:
    """The CPU backend for this process: keeps freed memory and returns what the core takes.

    `build_kernel`: build (or load) the attention kernel now, so that no trace of a model runs
    the compiler; models that use fused attention need it.
    """
    tuning.keep_freed_memory("cpu")
    if build_kernel:
        kernel = "compiled kernel" if attention.available(jnp.float32) else "blocked (XLA)"
    else:
        kernel = "not used"
    logging.info(
        "CPU backend: fused attention %s, XLA options %s, malloc %s.",
        kernel,
        tuning.compiler_options("cpu"),
        tuning.malloc_in_use(),
    )
    return Backend("cpu", fused_attention, tuning.compiler_options("cpu"))
