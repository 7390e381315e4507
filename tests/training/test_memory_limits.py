"""`experiments/memory_limits.py`: the search finds the boundary; the script runs end to end."""

import json
import os
import subprocess
import sys
import types

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import benchmark  # noqa: E402
import memory_limits  # noqa: E402


class FakeCase:
    """Peak bytes = base + per_unit * x (+ a quadratic term); `compile` returns a marker."""

    def __init__(self, base, per_unit, quad=0.0, compiler_oom_above=None, squeeze=None):
        self.args = types.SimpleNamespace(search="batch")
        self.base, self.per_unit, self.quad = base, per_unit, quad
        self.compiler_oom_above = compiler_oom_above
        self.squeeze = squeeze  # (bytes, up to size): XLA's remat holds the peak at `bytes`
        self.compiled = []

    def compile(self, x):
        self.compiled.append(x)
        if self.compiler_oom_above is not None and x > self.compiler_oom_above:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while compiling")
        peak = int(self.base + self.per_unit * x + self.quad * x * x)
        if self.squeeze and x <= self.squeeze[1]:
            peak = min(peak, self.squeeze[0])
        return f"exe{x}", peak


def _truth(case, limit, g):
    x = 0
    while case.base + case.per_unit * (x + g) + case.quad * (x + g) ** 2 <= limit:
        x += g
    return min(x, case.compiler_oom_above or x)


@pytest.mark.parametrize(
    "case",
    [
        FakeCase(1000, 10),  # linear: found in four compilations
        FakeCase(1000, 10, quad=0.05),  # quadratic (attention matrices)
        FakeCase(1000, 10, compiler_oom_above=600),  # the compiler itself gives up
    ],
)
def test_search_finds_the_largest_fitting_multiple(case):
    limit, g = 8000, 8
    best, compiled_at, probes, closed = memory_limits.search(
        case, limit, start=16, granularity=g, cap=4096, max_probes=12, log=lambda s: None
    )
    assert closed and best == _truth(case, limit, g)
    assert compiled_at[best] == f"exe{best}"
    assert any(x == best + g for x, _ in probes), "the next size up was never shown not to fit"
    if case.quad == 0 and case.compiler_oom_above is None:
        assert len(probes) <= 4


def test_search_doubles_past_sizes_that_xla_squeezed_under_the_limit():
    # As seen on an H100: past its natural limit XLA's rematerialisation holds the peak just
    # under the limit (a larger size, a smaller peak), up to a point. The line through the last
    # two peaks then slopes down; the search must not take that as "everything fits" and jump
    # to the cap (a huge program whose compile takes minutes), but double and bisect.
    case = FakeCase(1000, 10, squeeze=(7800, 1000))  # fits naturally up to 696, squeezed to 1000
    best, _, probes, closed = memory_limits.search(
        case, 8000, start=16, granularity=8, cap=4096, max_probes=14, log=lambda s: None
    )
    assert closed and best == 1000
    assert max(x for x, _ in probes) <= 2 * 1000
    assert memory_limits._squeezed(probes, 1000) and not memory_limits._squeezed(probes, 696)


def test_search_stops_at_the_cap_and_when_nothing_fits():
    best, _, probes, closed = memory_limits.search(
        FakeCase(0, 1), 10**9, start=8, granularity=8, cap=64, log=lambda s: None
    )
    assert (best, closed) == (64, True) and max(x for x, _ in probes) == 64
    best, _, _, _ = memory_limits.search(
        FakeCase(10**6, 1), 1000, start=32, granularity=8, cap=64, log=lambda s: None
    )
    assert best is None


def test_search_keeps_the_best_so_far_when_its_compile_budget_is_spent():
    best, _, probes, closed = memory_limits.search(
        FakeCase(1000, 10, quad=0.05), 8000, 16, 8, 4096, max_probes=3, log=lambda s: None
    )
    assert not closed and len(probes) == 3
    assert best == max(x for x, b in probes if b <= 8000)


def test_traced_flops_agree_with_xla_cost_analysis():
    """The benchmark's FLOP count (JAX's roofline) against XLA's own count on the CPU."""
    cfg = benchmark.model_config("spacetime", 32, 2, 4, 64)
    runner = benchmark.JaxRunner(cfg, 5, (2, 4, 32, 32, 3), "float32")
    fwd = lambda p, v: runner.model.apply({"params": p}, v, train=False)  # noqa: E731
    xla = jax.jit(fwd).lower(runner.state.params, runner.x).cost_analysis()["flops"]
    assert runner.flops["infer"] == pytest.approx(xla, rel=0.01)
    assert runner.flops["train"] > 2.5 * runner.flops["infer"]


def test_memory_limits_script_runs_end_to_end(tmp_path):
    out = tmp_path / "limits.json"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "memory_limits.py"),
        "--search=frames",
        "--size=Ti",
        "--layers=1",
        "--batch=1",
        "--resolution=32",
        "--dtype=float32",
        "--attention=fused",
        "--remat",
        "--start=4",
        "--granularity=4",
        "--max=16",
        "--limit-gib=1",
        "--run-steps=1",
        f"--json={out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["largest"] == 16 and report["at_cap"]
    assert report["step_s"] > 0 and report["clips_per_s"] > 0
    assert report["model_tflops_per_s"] > 0
    assert all(b <= report["limit_bytes"] for _, b in report["probes"])
    assert "largest frames that fits: 16" in proc.stdout
