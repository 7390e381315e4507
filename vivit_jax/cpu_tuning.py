"""XLA compiler options that make ViViT's steps faster on a CPU.

Found by profiling the CPU benchmarks of `experiments/README.md` on the 2-core CI machine (the
figures are there). jaxlib 0.10 sends every f32 dot on the CPU through YNNPACK (the XLA option
`xla_cpu_experimental_ynn_fusion_type` lists `individual_dot`). On ViViT's shapes XLA's own Eigen
contraction is faster (the (b) training step: 3744 → 2992 ms, median of 5, both compilations in
one process). YNNPACK stays faster on a large square matmul, so this is an option of our jits
(`compiler_options()`), not a global flag. Every jit that runs a model (train, eval, evaluate,
predict, benchmark) passes it.

Skipped off the CPU, when `XLA_FLAGS` already sets the option (the user's choice wins), and when
`VIVIT_JAX_CPU_TUNING=0` is in the environment.

`keep_freed_memory()` is the other half, for whole processes (the `vivit_jax.main` command line,
the benchmarks): XLA:CPU allocates each step's temporaries afresh, glibc hands large blocks
straight back to the kernel, and every step then page-faults its working set in again (279k
faults per (b) training step). Asking glibc to keep freed memory cut that to 186k and the step
from 2896 to 2588 ms (experiments/README.md). It is a process-wide setting, so library calls
never make it; the same opt-out applies, or `VIVIT_JAX_KEEP_FREED_MEMORY=0` for it alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import jax
from absl import logging

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPT_OUT_ENV = "VIVIT_JAX_CPU_TUNING"
# Opts out of `keep_freed_memory` alone (the test suite sets it: its process runs many models).
KEEP_FREED_MEMORY_ENV = "VIVIT_JAX_KEEP_FREED_MEMORY"


def _opted_out(environ, name: str = OPT_OUT_ENV) -> bool:
    return environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def compiler_options(backend: str | None = None, environ=os.environ) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a step compiled for `backend` (default: JAX's)."""
    if _opted_out(environ):
        return None
    if (backend or jax.default_backend()) != "cpu":
        return None
    user_flags = environ.get("XLA_FLAGS", "")
    options = {k: v for k, v in OPTIONS.items() if f"--{k}=" not in user_flags}
    return options or None


# glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD_BYTES = 64 << 20


def keep_freed_memory(backend: str | None = None, environ=os.environ) -> bool:
    """Makes glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    Large blocks come from the heap rather than from a fresh `mmap` each time (glibc still maps
    one when the heap cannot grow), the heap is never trimmed, and it grows 64 MiB at a time.
    The process's resident memory then stays at its peak, which a training or benchmark process
    reaches in its first step anyway. Returns whether the setting was made: only on the CPU
    backend, with glibc, without either opt-out (`VIVIT_JAX_CPU_TUNING=0`,
    `VIVIT_JAX_KEEP_FREED_MEMORY=0`). Written with ctypes: no library exposes `mallopt`.
    """
    if _opted_out(environ) or _opted_out(environ, KEEP_FREED_MEMORY_ENV):
        return False
    if (backend or jax.default_backend()) != "cpu":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logging.info("keep_freed_memory: no glibc mallopt in %r; malloc left as it is.", name)
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, _TOP_PAD_BYTES))
    return all(mallopt(param, value) == 1 for param, value in settings)
