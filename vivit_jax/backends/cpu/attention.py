"""Softmax attention on a CPU as a compiled kernel: `attention(q, k, v)`, float32.

The kernel (`attention.cc`) is an XLA FFI custom call pair, forward and backward (flash
attention's scheme: the backward pass recomputes the probabilities from each query row's
log-sum-exp), that gives each (batch, head) pair to one thread (the calling one, or a task on
XLA's own intra-op thread pool). Why: XLA:CPU has no attention kernel, and its Eigen dots run
attention's `[L, 64]` products well below the machine's matmul peak. The kernel's products are
OpenBLAS's (the `scipy-openblas32` wheel) or, at head dim 64 (every ViViT size) from
`TILE_FROM_TOKENS` tokens on and where the build has AVX-512, its own register tiles, which pack
the shared operand once per pair rather than per call. Measured speed: experiments/README.md
(`experiments/attention_speed.py`).

Built once per machine with the C++ compiler (`$CXX`, else `c++`) and `-march=native`, into
`$VIVIT_JAX_CACHE_DIR` (default `~/.cache/vivit_jax`) under a name that hashes the source, the
compiler flags, jaxlib's version and the CPU's model and flags, so a home directory shared
between machines keeps one build per kind of CPU. The backend builds it when it is set up
(`vivit_jax.backends.cpu.setup`), never while a model is traced. Where it cannot be built (no
compiler, no `scipy-openblas32`, not Linux, a failed compile) one warning says why and what to
install, and the backend uses `blocked.head_blocked_attention`: the same results to float32
rounding. `VIVIT_JAX_CPU_ATTENTION=0` turns it off.

Memory: nothing of size `[N, heads, L, L]` is kept for the backward pass (q, k, v, the output
and `[N, heads, L]` log-sum-exps are); while it runs, each thread holds one (forward) or two
(backward) `[rows, L]` float32 scratch matrices (`BLOCK_ROWS` rows: 3.2 MB per thread at 3137
tokens) and, with the tiles, one or two packed `[64, L]` copies (0.8 MB each at 3137 tokens); an
allocation that fails is an error that says so.

Sharded inputs (data parallel over XLA host devices, heads over a model axis) stay sharded:
the calls are `custom_partitioning` ops that run per shard over batch and heads, and gather
only a sharded length or head dimension (`_partitioned`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vivit_jax import compilation_cache
from vivit_jax.backends.cpu import tuning

SOURCE = os.path.join(os.path.dirname(__file__), "attention.cc")
OPT_OUT_ENV = "VIVIT_JAX_CPU_ATTENTION"
CXX_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 300
# Rows of a pair's scores computed at a time (0: all L): the kernel splits L into blocks of at
# most this many. 64 to 256 measured alike at 785 and 3137 tokens, all faster than one block.
BLOCK_ROWS = 128
# From how many tokens on calls with head dim 64 take the kernel's own register-tiled products
# (where the build has AVX-512) instead of OpenBLAS; 0: never. Below ~192 tokens OpenBLAS
# measured as fast or faster (likely its small-matrix path, which packs nothing; not verified).
TILE_FROM_TOKENS = 192
_FORWARD, _BACKWARD = "vivit_cpu_attention_forward", "vivit_cpu_attention_backward"


class BuildError(RuntimeError):
    """The kernel could not be built or loaded here; the message says why and what to do."""


def _cpu_signature() -> str:
    """The CPU's model name and feature flags (what `-march=native` compiles for)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _openblas():
    try:
        import scipy_openblas32
    except ImportError as e:
        raise BuildError(
            "the `scipy-openblas32` package is not installed (`pip install scipy-openblas32`)"
        ) from e
    return scipy_openblas32


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        raise BuildError(
            f"no C++ compiler {cxx!r} on PATH (install g++, e.g. `apt-get install g++`, or set CXX)"
        )
    return path


def build(cache_dir: str | None = None) -> str:
    """Compiles the kernel (or finds it already compiled) and returns the shared library's path.

    Raises `BuildError` with the reason (platform, compiler, OpenBLAS, compiler output).
    """
    if not sys.platform.startswith("linux"):
        raise BuildError(
            f"the CPU attention kernel is built on Linux only (this is {sys.platform})"
        )
    blas = _openblas()
    cxx = _compiler()
    include = [jax.ffi.include_dir(), blas.get_include_dir()]
    lib_dir = blas.get_lib_dir()
    flags = [*CXX_FLAGS, *(f"-I{d}" for d in include)]
    link = [f"-L{lib_dir}", f"-l{blas.get_library()}", f"-Wl,-rpath,{lib_dir}"]
    with open(SOURCE, "rb") as f:
        source = f.read()
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join([cxx, *flags, *link]).encode(),
                jax.__version__.encode(),
                importlib.metadata.version("jaxlib").encode(),
                _cpu_signature().encode(),
            ]
        )
    ).hexdigest()[:16]
    cache_dir = cache_dir or compilation_cache.project_cache_dir()
    out = os.path.join(cache_dir, f"cpu_attention-{key}.so")
    if os.path.exists(out):
        return out
    os.makedirs(cache_dir, exist_ok=True)
    # Compiled under a temporary name and renamed: processes building at once (several local
    # hosts) never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
    os.close(fd)
    try:
        cmd = [cxx, *flags, SOURCE, *link, "-o", tmp]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise BuildError(f"`{' '.join(cmd)}` did not finish in {COMPILE_TIMEOUT_S} s") from e
        if run.returncode != 0:
            raise BuildError(
                f"`{' '.join(cmd)}` failed (exit {run.returncode}):\n{run.stderr[-4000:]}"
            )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


@functools.cache
def _load() -> str | None:
    """Builds, loads and registers the kernel once per process; the reason it cannot, or None."""
    try:
        path = build()
    except BuildError as e:
        return str(e)
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        return f"{path} does not load ({e}); delete it to build it again"
    for name, symbol in (
        (_FORWARD, lib.VivitAttentionForward),
        (_BACKWARD, lib.VivitAttentionBackward),
    ):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
    return None


def _require_loaded() -> None:
    reason = _load()
    if reason is not None:
        raise BuildError(f"the CPU attention kernel is unavailable: {reason}")


_warned: set[str] = set()


def available(dtype=jnp.float32) -> bool:
    """Whether `attention` runs here: a CPU backend, float32, not opted out, and built."""
    if jax.default_backend() != "cpu" or jnp.dtype(dtype) != jnp.float32:
        return False
    if tuning.opted_out(os.environ, OPT_OUT_ENV):
        return False
    reason = _load()
    if reason is not None and reason not in _warned:
        _warned.add(reason)
        logging.warning(
            "attention_implementation='fused' on the CPU: the compiled attention kernel is "
            "unavailable (%s); using XLA's blocked attention instead (slower, same results). "
            "Set %s=0 to silence this.",
            reason,
            OPT_OUT_ENV,
        )
    return reason is None


def _threads(devices: int = 1) -> int:
    """Threads per call (the calling one and tasks on XLA's pool): the process's cores shared
    among the devices that run the program at once (XLA host devices each run their shard
    concurrently)."""
    return max(1, tuning.schedulable_cores() // max(1, devices))


def _local_devices(mesh) -> int:
    """How many of `mesh`'s devices this process drives."""
    devices = getattr(mesh, "devices", None)
    if devices is None:  # an abstract mesh: assume this process's CPU devices
        return jax.local_device_count("cpu")
    here = jax.process_index()
    return sum(d.process_index == here for d in np.asarray(devices).flat)


def _struct(shape) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def _attributes(devices: int) -> dict[str, np.int64]:
    """Both calls' attributes: threads for `devices` concurrent devices, row block, tiling."""
    return dict(
        threads=np.int64(_threads(devices)),
        block=np.int64(BLOCK_ROWS),
        tile_from=np.int64(TILE_FROM_TOKENS),
    )


def _forward_call(devices: int):
    """The forward custom call, its thread count set for `devices` concurrent devices."""

    def call(q, k, v):
        _require_loaded()
        n, length, heads, _ = q.shape
        ffi = jax.ffi.ffi_call(_FORWARD, (_struct(q.shape), _struct((n, heads, length))))
        return ffi(q, k, v, **_attributes(devices))

    return call


def _backward_call(devices: int):
    """The backward custom call, likewise."""

    def call(q, k, v, o, lse, d_o):
        _require_loaded()
        ffi = jax.ffi.ffi_call(_BACKWARD, tuple(_struct(q.shape) for _ in range(3)))
        return ffi(q, k, v, o, lse, d_o, **_attributes(devices))

    return call


# Batch (n) and heads (h) shard; the length (l) and head dim (d) must be whole on each device.
_TOKENS = "n l h d"
_LSE = "n h l"


def _pair_shardings(mesh, sharding) -> dict[str, NamedSharding]:
    """Shardings of the `[N, L, H, D]` ("tokens") and `[N, H, L]` ("lse") operands: the batch
    and head axes of `sharding` (the query's) kept, length and head dim whole. A sharding
    without a partition spec (one JAX could not name on `mesh`) runs replicated."""
    spec = tuple(getattr(sharding, "spec", ()))
    spec += (None,) * (4 - len(spec))
    batch, heads = spec[0], spec[2]
    return {
        "tokens": NamedSharding(mesh, P(batch, None, heads, None)),
        "lse": NamedSharding(mesh, P(batch, heads, None)),
    }


def _partitioned(make_call, operands: str, results: str, kinds_in, kinds_out):
    """`make_call(devices)` as a `custom_partitioning` op that runs per shard over batch and
    heads (unpartitioned: on one device)."""
    wrapped = custom_partitioning(make_call(1))

    def partition(mesh, arg_shapes, result_shape):
        pick = _pair_shardings(mesh, arg_shapes[0].sharding)
        args = tuple(pick[k] for k in kinds_in)
        outs = tuple(pick[k] for k in kinds_out)
        return mesh, make_call(_local_devices(mesh)), outs, args

    wrapped.def_partition(
        partition=partition,
        sharding_rule=f"{operands} -> {results}",
        need_replication_factors=("l", "d"),
    )
    return wrapped


_forward = _partitioned(
    _forward_call,
    ", ".join([_TOKENS] * 3),
    f"{_TOKENS}, {_LSE}",
    ("tokens",) * 3,
    ("tokens", "lse"),
)
_backward = _partitioned(
    _backward_call,
    ", ".join([_TOKENS] * 4 + [_LSE, _TOKENS]),
    ", ".join([_TOKENS] * 3),
    ("tokens",) * 4 + ("lse", "tokens"),
    ("tokens",) * 3,
)


@jax.custom_vjp
def attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """Softmax attention over `[N, L, heads, head_dim]` float32 inputs (scores scaled by
    1/sqrt(head_dim)), by the compiled kernel; call only where `available()`."""
    return _forward(query, key, value)[0]


def _attention_fwd(query, key, value):
    out, lse = _forward(query, key, value)
    return out, (query, key, value, out, lse)


def _attention_bwd(residuals, d_out):
    return tuple(_backward(*residuals, d_out))


attention.defvjp(_attention_fwd, _attention_bwd)
