"""Process and compiler settings that make ViViT's steps faster on a CPU (the `cpu` backend).

`compiler_options()`: jaxlib 0.10 sends every float32 dot on the CPU through YNNPACK; on
ViViT's shapes XLA's own Eigen contraction measured faster (while YNNPACK stays faster on a large
square matmul), so the backend hands these options to the project's jits instead of setting a
global flag. Skipped off the CPU, where `XLA_FLAGS` already sets the option (the user's choice
wins), and with `VIVIT_JAX_CPU_TUNING=0`.

`keep_freed_memory()`: glibc's malloc keeps freed memory for reuse instead of returning it to
the kernel, so that XLA:CPU's per-step temporaries are not page-faulted in again every step. A
process-wide setting, made by the backend's set-up (the command lines), never by library calls;
`VIVIT_JAX_KEEP_FREED_MEMORY=0` turns it off alone.

`restart_with_fast_malloc()`, an explicit opt-in (`VIVIT_JAX_MALLOC=mimalloc` or `huge-pages`):
the command line restarts once, first thing, with mimalloc (the `cmeel-mimalloc` wheel of the
`cpu` extra) preloaded and told never to return freed memory, or with glibc's transparent
huge-page tunable. glibc cannot be told to keep XLA's worker threads' large blocks, which are
fresh `mmap`s unmapped on `free`; with mimalloc no step faults them in again. Measured effects:
experiments/README.md.
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


def schedulable_cores() -> int:
    """The cores this process may run on (its affinity mask), or the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def opted_out(environ, name: str = OPT_OUT_ENV) -> bool:
    """Whether `environ[name]` turns a setting off (0, false, no, off; unset means on)."""
    return environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def _backend(backend: str | None) -> str:
    if backend:
        return backend
    import jax  # here, not above: `restart_with_huge_pages` runs before anything imports JAX

    return jax.default_backend()


def compiler_options(backend: str | None = None, environ=os.environ) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a step compiled for `backend` (default: JAX's)."""
    if opted_out(environ):
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
    if opted_out(environ) or opted_out(environ, KEEP_FREED_MEMORY_ENV):
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


# The allocator `restart_with_fast_malloc` gives a CPU process: mimalloc where its wheel is
# installed (else glibc on transparent huge pages), huge pages alone, or the default (no restart).
MALLOC_ENV = "VIVIT_JAX_MALLOC"
MALLOC_CHOICES = ("mimalloc", "huge-pages", "default")
MIMALLOC_DISTRIBUTION = "cmeel-mimalloc"
# Never hand freed memory back to the kernel (mimalloc's default: after 10 ms): a step's
# temporaries are the next step's. A user's own setting of the variable wins.
MIMALLOC_OPTIONS = {"MIMALLOC_PURGE_DELAY": "-1"}
# A malloc the user preloads already (any of these in LD_PRELOAD) is left alone.
_PRELOADED_MALLOCS = ("mimalloc", "jemalloc", "tcmalloc")
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


def mimalloc_library() -> str | None:
    """The mimalloc shared library the `cmeel-mimalloc` wheel installed (its major-version name,
    e.g. `.../cmeel.prefix/lib/libmimalloc.so.3`), None where the wheel is not installed."""
    try:
        files = importlib.metadata.files(MIMALLOC_DISTRIBUTION) or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    paths = sorted(str(f.locate()) for f in files if re.fullmatch(r"libmimalloc\.so\.\d+", f.name))
    return next((p for p in paths if os.path.isfile(p)), None)


def malloc_choice(environ=os.environ) -> str:
    """`VIVIT_JAX_MALLOC` (default `default`: no restart); a clear error for any other value."""
    choice = environ.get(MALLOC_ENV, "default").strip().lower() or "default"
    if choice not in MALLOC_CHOICES:
        raise ValueError(
            f"{MALLOC_ENV}={environ[MALLOC_ENV]!r}: expected one of {', '.join(MALLOC_CHOICES)} "
            "(default = leave malloc as it is)."
        )
    return choice


def fast_malloc_environ(
    environ=os.environ, thp_enabled_file: str = THP_ENABLED_FILE
) -> dict[str, str] | None:
    """The environment to restart this process in with a faster malloc, None for no restart.

    mimalloc preloaded (`LD_PRELOAD`, before the user's entries) with `MIMALLOC_OPTIONS`, where
    `VIVIT_JAX_MALLOC` is `mimalloc` and `mimalloc_library()` finds it; otherwise, or for
    `huge-pages`, glibc's huge-page tunable (`huge_pages_environ`). None when there is nothing
    to do: `default` (unset), `VIVIT_JAX_CPU_TUNING=0`, JAX will run on an accelerator, or this
    restart is done (`LD_PRELOAD` names mimalloc, jemalloc or tcmalloc: a user's preloaded
    malloc is theirs to keep).
    """
    choice = malloc_choice(environ)
    if choice == "default" or opted_out(environ) or not _jax_will_run_on_cpu(environ):
        return None
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in _PRELOADED_MALLOCS):
        return None
    library = mimalloc_library() if choice == "mimalloc" else None
    if library is None:
        return huge_pages_environ(environ, thp_enabled_file)
    return mimalloc_environ(environ, library)


def mimalloc_environ(environ, library: str) -> dict[str, str]:
    """`environ` with mimalloc (`library`) preloaded before the user's `LD_PRELOAD` entries, and
    `MIMALLOC_OPTIONS` where the user set none of their own."""
    options = {k: environ.get(k, v) for k, v in MIMALLOC_OPTIONS.items()}
    preload = " ".join(filter(None, (library, environ.get("LD_PRELOAD", ""))))
    return {**environ, **options, "LD_PRELOAD": preload}


def malloc_in_use() -> str:
    """What this process's malloc is, for logs and benchmark reports: `mimalloc (<path>)`,
    `glibc on huge pages`, or `glibc`."""
    try:
        with open("/proc/self/maps") as f:
            mapped = {line.split()[-1] for line in f if "libmimalloc" in line}
    except OSError:
        mapped = set()
    if mapped:
        return f"mimalloc ({min(mapped)})"
    if HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        return "glibc on huge pages"
    return "glibc"


def huge_pages_environ(
    environ=os.environ, thp_enabled_file: str = THP_ENABLED_FILE
) -> dict[str, str] | None:
    """The environment to restart this process in so that malloc uses transparent huge pages.

    None when there is nothing to do: opted out (`VIVIT_JAX_CPU_TUNING=0`), `GLIBC_TUNABLES`
    already names `glibc.malloc.hugetlb` (the user's
    choice, or this restart done), the kernel gives huge pages to every process anyway ('always')
    or to none ('never', or no THP), glibc is older than 2.35 (no such tunable) or absent, or
    JAX will run on an accelerator.
    """
    if opted_out(environ):
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


def restart_with_fast_malloc() -> None:
    """Re-executes this process (same interpreter, same arguments) with `fast_malloc_environ`'s
    allocator: mimalloc that keeps freed memory, or glibc on transparent huge pages.

    Only where `VIVIT_JAX_MALLOC` asks for it. A preloaded library and glibc's tunables are read
    only when a process starts, hence the restart. Call it first thing in a `__main__`
    (`vivit_jax.main`, the benchmark), never from library code; the restarted process finds its
    environment set and carries on.
    """
    env = fast_malloc_environ()
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
