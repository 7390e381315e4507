"""`vivit_jax.backends.cpu.tuning`: the XLA:CPU compiler options the CPU backend hands to the
jits, glibc malloc settings, and the opt-in mimalloc restart."""

import ctypes
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from vivit_jax.backends.cpu import tuning as cpu_tuning

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
    from vivit_jax.backends.cpu import tuning as cpu_tuning
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
    monkeypatch.setattr(cpu_tuning, "mimalloc_library", lambda: str(tmp_path / "libmimalloc.so.3"))
    asked = {cpu_tuning.MALLOC_ENV: "mimalloc"}
    if cpu_tuning.fast_malloc_environ(asked, madvise) is None:
        pytest.skip("a JAX accelerator plugin is installed here")
    (tmp_path / "jax_plugins").mkdir()  # a namespace package, as the CUDA plugins install
    (tmp_path / "jax_plugins" / "xla_cuda13").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cpu_tuning.huge_pages_environ({}, madvise) is None
    assert cpu_tuning.fast_malloc_environ(asked, madvise) is None


@pytest.fixture
def fake_mimalloc(tmp_path, monkeypatch):
    library = str(tmp_path / "lib" / "libmimalloc.so.3")
    monkeypatch.setattr(cpu_tuning, "mimalloc_library", lambda: library)
    return library


def test_mimalloc_restart_preloads_it_before_the_users_libraries(fake_mimalloc, tmp_path):
    env = {
        "JAX_PLATFORMS": "cpu",
        "LD_PRELOAD": "/opt/libfoo.so",
        "A": "b",
        cpu_tuning.MALLOC_ENV: "mimalloc",
    }
    out = cpu_tuning.fast_malloc_environ(env, _thp_file(tmp_path, "madvise"))
    assert out == {
        **env,
        "LD_PRELOAD": f"{fake_mimalloc} /opt/libfoo.so",
        "MIMALLOC_PURGE_DELAY": "-1",  # never hand freed memory back to the kernel
    }
    env = {
        "JAX_PLATFORMS": "cpu",
        "MIMALLOC_PURGE_DELAY": "100",
        cpu_tuning.MALLOC_ENV: "mimalloc",
    }  # theirs wins
    out = cpu_tuning.fast_malloc_environ(env, _thp_file(tmp_path, "madvise"))
    assert out["MIMALLOC_PURGE_DELAY"] == "100" and out["LD_PRELOAD"] == fake_mimalloc


@pytest.mark.parametrize(
    "env",
    [
        {},  # not asked for: the default
        {cpu_tuning.MALLOC_ENV: "default"},
        {cpu_tuning.MALLOC_ENV: " Default "},
        {cpu_tuning.MALLOC_ENV: "mimalloc", cpu_tuning.OPT_OUT_ENV: "0"},
        {cpu_tuning.MALLOC_ENV: "mimalloc", "JAX_PLATFORMS": "cuda"},
        # The restart is done, or the user preloads a malloc of their own:
        {
            cpu_tuning.MALLOC_ENV: "mimalloc",
            "LD_PRELOAD": "/site/cmeel.prefix/lib/libmimalloc.so.3",
        },
        {
            cpu_tuning.MALLOC_ENV: "mimalloc",
            "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
        },
        {cpu_tuning.MALLOC_ENV: "mimalloc", "LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    ],
)
def test_no_malloc_restart_when_not_wanted_or_done(fake_mimalloc, tmp_path, glibc_2_36, env):
    thp = _thp_file(tmp_path, "madvise")
    assert cpu_tuning.fast_malloc_environ({"JAX_PLATFORMS": "cpu", **env}, thp) is None


def test_without_mimalloc_or_asked_to_the_restart_uses_huge_pages(
    fake_mimalloc, tmp_path, glibc_2_36, monkeypatch
):
    thp = _thp_file(tmp_path, "madvise")
    env = {"JAX_PLATFORMS": "cpu", cpu_tuning.MALLOC_ENV: "huge-pages"}
    assert cpu_tuning.fast_malloc_environ(env, thp) == cpu_tuning.huge_pages_environ(env, thp)
    assert "LD_PRELOAD" not in cpu_tuning.fast_malloc_environ(env, thp)
    monkeypatch.setattr(cpu_tuning, "mimalloc_library", lambda: None)
    env = {"JAX_PLATFORMS": "cpu", cpu_tuning.MALLOC_ENV: "mimalloc"}
    out = cpu_tuning.fast_malloc_environ(env, thp)
    assert out == {**env, "GLIBC_TUNABLES": cpu_tuning.HUGE_PAGES_TUNABLE}


def test_an_unknown_malloc_choice_is_a_clear_error():
    with pytest.raises(ValueError, match=r"VIVIT_JAX_MALLOC='jemalloc'.*mimalloc, huge-pages"):
        cpu_tuning.fast_malloc_environ({cpu_tuning.MALLOC_ENV: "jemalloc"})


def test_mimalloc_library_is_the_installed_wheels():
    try:
        importlib.metadata.distribution(cpu_tuning.MIMALLOC_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        assert cpu_tuning.mimalloc_library() is None
        pytest.skip(f"{cpu_tuning.MIMALLOC_DISTRIBUTION} is not installed here")
    library = cpu_tuning.mimalloc_library()
    assert os.path.isfile(library) and re.search(r"libmimalloc\.so\.\d+$", library)
    ctypes.CDLL(library).mi_version.restype = ctypes.c_int  # loads: a real mimalloc
    assert ctypes.CDLL(library).mi_version() >= 200


# Runs the restart, then touches, frees and touches again a 256 MiB block with the process's
# malloc (the preloaded one: symbols looked up globally, as XLA's are); prints what it saw.
_RESTART = textwrap.dedent(
    """
    import ctypes, json, os, re, resource, time
    print("started", os.getpid(), flush=True)
    from vivit_jax.backends.cpu import tuning as cpu_tuning
    cpu_tuning.restart_with_fast_malloc()
    process = ctypes.CDLL(None)
    process.malloc.restype = ctypes.c_void_p
    process.free.argtypes = [ctypes.c_void_p]
    def touch():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = process.malloc(256 << 20)
        ctypes.memset(block, 1, 256 << 20)
        with open("/proc/self/smaps_rollup") as f:
            huge_kib = int(re.search(r"AnonHugePages:\\s+(\\d+) kB", f.read()).group(1))
        process.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, huge_kib
    first, huge_kib = touch()
    time.sleep(0.2)  # past mimalloc's default delay before it hands freed memory back (10 ms),
    if hasattr(process, "mi_collect"):  # then what a busy process's allocations would trigger
        process.mi_collect(0)
    print(json.dumps(dict(
        malloc=cpu_tuning.malloc_in_use(), tunables=os.environ.get("GLIBC_TUNABLES", ""),
        preload=os.environ.get("LD_PRELOAD", ""), first=first, second=touch()[0], huge_kib=huge_kib,
    )))
    """
)


def _restart(choice: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIVIT_JAX_", "MIMALLOC_"))}
    env.update({"JAX_PLATFORMS": "cpu", cpu_tuning.MALLOC_ENV: choice})
    for name in ("GLIBC_TUNABLES", "LD_PRELOAD"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", _RESTART], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    started = [line for line in lines if line.startswith("started")]
    assert len(set(started)) == 1  # restarted (if at all) as the same process
    return len(started), json.loads(lines[-1])


def test_restart_puts_mimalloc_under_the_process_and_it_keeps_freed_memory():
    if cpu_tuning.mimalloc_library() is None:
        pytest.skip(f"{cpu_tuning.MIMALLOC_DISTRIBUTION} is not installed here")
    starts, seen = _restart("mimalloc")
    assert starts == 2 and seen["malloc"].startswith("mimalloc (")
    assert seen["preload"] == cpu_tuning.mimalloc_library()
    # The block was touched for real (>= 128 faults even on 2 MiB pages, which mimalloc asks
    # for), then its memory reused, not faulted in again.
    assert seen["first"] >= 128 and seen["second"] <= seen["first"] // 10
    starts, seen = _restart("default")  # glibc unmaps the block and maps it afresh
    pages = (256 << 20) // 4096
    assert starts == 1 and seen["malloc"] == "glibc" and seen["second"] > pages // 2


def test_restart_puts_glibc_malloc_on_huge_pages():
    env = {"JAX_PLATFORMS": "cpu"}
    if cpu_tuning.huge_pages_environ(env) is None:
        pytest.skip("this machine's kernel or glibc gives nothing to restart for")
    starts, seen = _restart("huge-pages")
    assert starts == 2 and seen["malloc"] == "glibc on huge pages"
    assert seen["tunables"] == cpu_tuning.HUGE_PAGES_TUNABLE and seen["preload"] == ""
    assert seen["huge_kib"] >= 128 << 10  # at least half of the block on 2 MiB pages
    starts, seen = _restart("default")
    assert starts == 1 and seen["tunables"] == ""
    assert seen["huge_kib"] < 2048  # the kernel gave the block no huge page
