"""`experiments/benchmark.py` runs end to end on a tiny model and writes its JSON."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vivit_jax.backends.cpu import tuning as cpu_tuning

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


PEER = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


def test_benchmark_writes_every_runner_and_mode(tmp_path):
    """Also, where torch is installed (CI installs it), the peer in its own process."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIVIT_JAX_")}
    for name in ("GLIBC_TUNABLES", "LD_PRELOAD"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "benchmark.py"),
        "--size=Ti",
        "--layers=1",
        "--frames=4",
        "--resolution=32",
        "--batch=2",
        "--classes=5",
        "--repeats=1",
        "--steps=1",
        "--warmup=0",
        "--devices=1,2",
        "--backend=both",
        "--last-block=cls,all",
        "--profile=1",
        f"--json={out}",
    ] + (["--peer"] if PEER else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["matmul_peaks"]) == {"vivit_jax", "vivit_jax[cpu]"}
    assert report["matmul_peak_flops"] == max(report["matmul_peaks"].values()) > 0
    (row,) = report["rows"]
    runners = {
        f"vivit_jax{backend} last block: {last}{devices}"
        for backend in ("", "[cpu]")
        for last in ("cls", "all")
        for devices in ("", " x2 devices")
    }
    for mode in ("train", "infer"):
        assert set(row[mode]) == runners
        for name, m in row[mode].items():
            assert m["step_s"] > 0 and m["min_step_s"] <= m["step_s"]
            assert 0 < m["fraction_of_matmul_peak"] < 10
            assert ("speedup_vs_peer" in m) == PEER
            profile = m["profile"]  # --profile=1: where this runner's kernel time went
            assert profile["steps"] == 1 and profile["kernel_s"] > 0
            if "[cpu]" in name:  # jaxlib's YNNPACK `ynn_fusion` kernels name no matmul
                assert profile["by_category"]["matmul"]["s"] > 0
            # Each runner's FLOPs are its own program's: the class-token-only last block less.
            other = row[mode][name.replace("last block: cls", "last block: all")]
            if "last block: cls" in name:
                assert m["model_flops"] < 0.9 * other["model_flops"]
    assert "train" in proc.stdout and "x2 devices" in proc.stdout
    # As vivit_jax.main: restarted with mimalloc (else glibc on huge pages); the peer not.
    if cpu_tuning.mimalloc_library():
        assert report["malloc_in_use"] == f"mimalloc ({cpu_tuning.mimalloc_library()})"
    elif cpu_tuning.huge_pages_environ(env) is not None:
        assert report["malloc_in_use"] == "glibc on huge pages"
    if PEER:
        assert row["peer"]["malloc"] == "glibc" and row["peer"]["glibc_tunables"] == ""


def test_benchmark_imports_without_tensorflow():
    """GPU machines may have JAX but no TensorFlow: the benchmark must not import it."""
    code = (
        f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'experiments')!r}); "
        "import benchmark; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_init_compile_script_times_both_lowerings_and_compares_parameters():
    """experiments/init_compile.py: both settings of JAX's threefry GPU kernel lowering (a no-op
    on a CPU) compile, run, and give the same parameters bit for bit."""
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "init_compile.py"),
        "--size=Ti",
        "--layers=1",
        "--frames=4",
        "--resolution=32",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "jax_threefry_gpu_kernel_lowering=False" in proc.stdout
    assert "jax_threefry_gpu_kernel_lowering=True" in proc.stdout
    assert "the same parameters, bit for bit: True" in proc.stdout


def test_the_peer_runs_without_vivit_jax_malloc_unless_asked(monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(cpu_tuning, "mimalloc_library", lambda: "/site/lib/libmimalloc.so.3")
    ours = {
        "A": "b",
        "LD_PRELOAD": "/site/lib/libmimalloc.so.3 /opt/libfoo.so",
        "MIMALLOC_PURGE_DELAY": "-1",
        "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1:glibc.malloc.hugetlb=1",
    }
    assert benchmark.peer_environ(ours, "default") == {
        "A": "b",
        "LD_PRELOAD": "/opt/libfoo.so",
        "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1",
    }
    assert benchmark.peer_environ({"A": "b"}, "default") == {"A": "b"}
    assert benchmark.peer_environ({"A": "b"}, "mimalloc") == {
        "A": "b",
        "LD_PRELOAD": "/site/lib/libmimalloc.so.3",
        "MIMALLOC_PURGE_DELAY": "-1",
    }
    monkeypatch.setattr(cpu_tuning, "mimalloc_library", lambda: None)
    with pytest.raises(RuntimeError, match="pip install cmeel-mimalloc"):
        benchmark.peer_environ({}, "mimalloc")
