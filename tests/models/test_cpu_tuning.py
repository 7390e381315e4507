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


def _thp_file(tmp_path, mode: str) -> str:
    path = tmp_path / "enabled"
    path.write_text(" ".join(f"[{m}]" if m == mode else m for m in ("always", "madvise", "never")))
    return str(path)


@pytest.fixture
def glibc_2_36(monkeypatch):
    monkeypatch.setattr(cpu_tuning, "_glibc_version", lambda: (2, 36))


def test_huge_pages_restart_environment_adds_the_tunable_to_the_users(tmp_path, glibc_2_36):
    env = {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1", "A": "b"}
    out = cpu_tuning.huge_pages_environ(env, _thp_file(tmp_path, "madvise"))
    assert out == {**env, "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.hugetlb=1"}
    out = cpu_tuning.huge_pages_environ({"JAX_PLATFORMS": "cpu"}, _thp_file(tmp_path, "madvise"))
    assert out["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


@pytest.mark.parametrize(
    "env,mode",
    [
        ({cpu_tuning.HUGE_PAGES_ENV: "0"}, "madvise"),
        ({cpu_tuning.OPT_OUT_ENV: "off"}, "madvise"),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise"),  # the user's choice (or done)
        ({}, "always"),  # every process gets huge pages anyway
        ({}, "never"),
        ({}, None),  # no transparent huge pages in this kernel
        ({"JAX_PLATFORMS": "cuda,cpu"}, "madvise"),
    ],
)
def test_no_huge_pages_restart_when_there_is_nothing_to_gain(tmp_path, glibc_2_36, env, mode):
    thp = _thp_file(tmp_path, mode) if mode else str(tmp_path / "missing")
    assert cpu_tuning.huge_pages_environ({"JAX_PLATFORMS": "cpu", **env}, thp) is None


def test_no_huge_pages_restart_before_glibc_2_35(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_tuning, "_glibc_version", lambda: (2, 31))
    assert (
        cpu_tuning.huge_pages_environ({"JAX_PLATFORMS": "cpu"}, _thp_file(tmp_path, "madvise"))
        is None
    )


def test_an_installed_accelerator_plugin_means_no_restart(tmp_path, glibc_2_36, monkeypatch):
    madvise = _thp_file(tmp_path, "madvise")
    if cpu_tuning.huge_pages_environ({}, madvise) is None:
        pytest.skip("a JAX accelerator plugin is installed here")
    (tmp_path / "jax_plugins").mkdir()  # a namespace package, as the CUDA plugins install
    (tmp_path / "jax_plugins" / "xla_cuda13").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cpu_tuning.huge_pages_environ({}, madvise) is None


# Runs the restart, then maps and touches a 64 MiB malloc block; prints what the process saw.
_RESTART = textwrap.dedent(
    """
    import ctypes, ctypes.util, json, os, re
    print("started", os.getpid(), flush=True)
    from vivit_jax import cpu_tuning
    cpu_tuning.restart_with_huge_pages()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    with open("/proc/self/smaps_rollup") as f:
        huge_kib = int(re.search(r"AnonHugePages:\\s+(\\d+) kB", f.read()).group(1))
    print(json.dumps(dict(tunables=os.environ.get("GLIBC_TUNABLES", ""), huge_kib=huge_kib)))
    """
)


@pytest.mark.parametrize("opt_out", [False, True])
def test_restart_puts_malloc_on_huge_pages_in_the_same_process(opt_out):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVIT_JAX_")}
    env.update(JAX_PLATFORMS="cpu", **({cpu_tuning.HUGE_PAGES_ENV: "0"} if opt_out else {}))
    env.pop("GLIBC_TUNABLES", None)
    if not opt_out and cpu_tuning.huge_pages_environ(env) is None:
        pytest.skip("this machine's kernel or glibc gives nothing to restart for")
    out = subprocess.run(
        [sys.executable, "-c", _RESTART], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    started = [line for line in lines if line.startswith("started")]
    seen = json.loads(lines[-1])
    if opt_out:
        assert len(started) == 1 and seen["tunables"] == ""
        assert seen["huge_kib"] < 2048  # the kernel gave the block no huge page
    else:
        assert len(started) == 2 and len(set(started)) == 1  # restarted once, as the same process
        assert seen["tunables"] == cpu_tuning.HUGE_PAGES_TUNABLE
        assert seen["huge_kib"] >= 32 << 10  # at least half of the block on 2 MiB pages
