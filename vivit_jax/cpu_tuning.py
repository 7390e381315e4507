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
(Measured again in stop 15, in separate processes: it no longer changes the faults of a step,
which come from XLA's worker threads' malloc arenas; kept, as it costs nothing measurable.)

`restart_with_huge_pages()`, the third: the same temporaries on transparent huge pages, which
glibc asks for only when a tunable is set at process start, hence a restart of the command line
(`VIVIT_JAX_HUGE_PAGES=0` to skip it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import re
import sys

from absl import logging

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPT_OUT_ENV = "VIVIT_JAX_CPU_TUNING"
# Opts out of `keep_freed_memory` alone (the test suite sets it: its process runs many models).
KEEP_FREED_MEMORY_ENV = "VIVIT_JAX_KEEP_FREED_MEMORY"


def _opted_out(environ, name: str = OPT_OUT_ENV) -> bool:
    return environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def _backend(backend: str | None) -> str:
    if backend:
        return backend
    import jax  # here, not above: `restart_with_huge_pages` runs before anything imports JAX

    return jax.default_backend()


def compiler_options(backend: str | None = None, environ=os.environ) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a step compiled for `backend` (default: JAX's)."""
    if _opted_out(environ):
        return None
    if _backend(backend) != "cpu":
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
    if _backend(backend) != "cpu":
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


# Transparent huge pages for malloc (glibc >= 2.35): `restart_with_huge_pages`.
HUGE_PAGES_ENV = "VIVIT_JAX_HUGE_PAGES"
HUGE_PAGES_TUNABLE_NAME = "glibc.malloc.hugetlb"
HUGE_PAGES_TUNABLE = f"{HUGE_PAGES_TUNABLE_NAME}=1"
THP_ENABLED_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _thp_mode(path: str) -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), None if unknown."""
    try:
        with open(path) as f:
            match = re.search(r"\[(\w+)\]", f.read())
    except OSError:
        return None
    return match.group(1) if match else None


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. 'glibc 2.36'
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (ValueError, OSError, AttributeError):
        return None


def _jax_will_run_on_cpu(environ) -> bool:
    """Whether JAX will choose its CPU backend, decided without importing JAX or starting one.

    An explicit `JAX_PLATFORMS` decides. Otherwise JAX prefers an accelerator whose plugin is
    installed: a `jax_plugins` entry point or module (CUDA, ROCm) or `libtpu`.
    """
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    if importlib.metadata.entry_points(group="jax_plugins"):
        return False
    return not any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu"))


def huge_pages_environ(
    environ=os.environ, thp_enabled_file: str = THP_ENABLED_FILE
) -> dict[str, str] | None:
    """The environment to restart this process in so that malloc uses transparent huge pages.

    None when there is nothing to do: opted out (`VIVIT_JAX_HUGE_PAGES=0` or
    `VIVIT_JAX_CPU_TUNING=0`), `GLIBC_TUNABLES` already names `glibc.malloc.hugetlb` (the user's
    choice, or this restart done), the kernel gives huge pages to every process anyway ('always')
    or to none ('never', or no THP), glibc is older than 2.35 (no such tunable) or absent, or
    JAX will run on an accelerator.
    """
    if _opted_out(environ) or _opted_out(environ, HUGE_PAGES_ENV):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if HUGE_PAGES_TUNABLE_NAME in tunables:
        return None
    if _thp_mode(thp_enabled_file) != "madvise":
        return None
    if (_glibc_version() or (0,)) < (2, 35):
        return None
    if not _jax_will_run_on_cpu(environ):
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, HUGE_PAGES_TUNABLE)))}


def restart_with_huge_pages() -> None:
    """Re-executes this process (same interpreter, same arguments) with malloc on huge pages.

    On the CPU, XLA's steps are memory-bound between their dots, over temporaries that malloc
    maps afresh every step; with glibc's `glibc.malloc.hugetlb=1` (it `madvise`s its memory for
    transparent huge pages, which a kernel in 'madvise' mode, the common default, gives only to
    regions that ask) a step faults 2 MiB pages instead of 4 KiB ones, about 300 times fewer
    faults, and misses the TLB less: the benchmark configs' training steps are 15–20% shorter
    ((b): 2874 -> 2409 ms, experiments/README.md). The tunable is read only when a process
    starts, so it cannot be set from Python for the running process: hence the restart. Call it
    first thing in a `__main__` (`vivit_jax.main`, the benchmark), never from library code; it
    returns without restarting when `huge_pages_environ` says there is nothing to do, and the
    restarted process finds the tunable set and carries on.
    """
    env = huge_pages_environ()
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
