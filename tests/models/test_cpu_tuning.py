"""`vivit_jax.cpu_tuning`: the XLA:CPU compiler options of the project's jits, and malloc."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from vivit_jax import cpu_tuning

OPTION = "xla_cpu_experimental_ynn_fusion_type"


def test_cpu_gets_eigen_dots():
    assert cpu_tuning.compiler_options("cpu", environ={}) == {OPTION: ""}


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_other_backends_untouched(backend):
    assert cpu_tuning.compiler_options(backend, environ={}) is None


def test_users_xla_flags_win():
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 --{OPTION}=individual_dot"}
    assert cpu_tuning.compiler_options("cpu", environ=env) is None


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_opt_out(value):
    assert cpu_tuning.compiler_options("cpu", environ={cpu_tuning.OPT_OUT_ENV: value}) is None


def _dot_hlo(options) -> str:
    x = jnp.ones((64, 32))
    return jax.jit(lambda a: a @ a.T, compiler_options=options).lower(x).compile().as_text()


def test_options_change_the_compiled_dot():
    """With the options the dot is XLA's own (Eigen); jaxlib's default wraps it for YNNPACK."""
    assert "ynn" not in _dot_hlo(cpu_tuning.compiler_options("cpu", environ={})).lower()
    if "ynn" not in _dot_hlo(None).lower():
        pytest.skip(f"jaxlib {jax.__version__} no longer sends dots to YNNPACK by default")


# Allocates, touches and frees a 256 MiB block twice; prints the page faults of the second round.
_REUSE = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, resource, sys
    from vivit_jax import cpu_tuning
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    kept = cpu_tuning.keep_freed_memory("cpu") if sys.argv[1] == "keep" else False
    def touch():  # as XLA:CPU's temporaries: plain malloc (numpy would ask for huge pages)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(256 << 20)
        ctypes.memset(block, 1, 256 << 20)
        libc.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    touch()
    print(json.dumps(dict(kept=kept, faults=touch())))
    """
)


def _second_round(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVIT_JAX_")}
    out = subprocess.run(
        [sys.executable, "-c", _REUSE, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_keep_freed_memory_stops_refaulting_a_reused_block():
    pages = (256 << 20) // 4096
    default = _second_round("default")
    assert default["faults"] > pages // 2  # glibc unmapped the block and maps it afresh
    kept = _second_round("keep")
    assert kept["kept"] and kept["faults"] < pages // 20


@pytest.mark.parametrize(
    "backend,env",
    [
        ("gpu", {}),
        ("cpu", {cpu_tuning.OPT_OUT_ENV: "0"}),
        ("cpu", {cpu_tuning.KEEP_FREED_MEMORY_ENV: "off"}),
    ],
)
def test_keep_freed_memory_only_on_the_cpu_without_opt_out(backend, env):
    assert cpu_tuning.keep_freed_memory(backend, environ=env) is False
