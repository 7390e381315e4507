"""Test-wide set-up: 8 simulated CPU devices, so sharding code is exercised everywhere.

XLA's LLVM backend optimisation is turned down for tests: it roughly triples compile speed on
the tiny models here and changes no HLO-level numerics the tests compare (benchmarks and real
runs keep the default).
"""

import os
import sys

# Must happen before JAX initialises its backends.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `vivit_jax.main` keeps freed memory for reuse (tuning.keep_freed_memory); not in the test
# process, which runs many different models one after another (tests/reliability's real
# `vivit_jax.main` processes run with it).
os.environ.setdefault("VIVIT_JAX_KEEP_FREED_MEMORY", "0")


def pytest_runtest_logreport(report):
    """With VIVIT_JAX_REPORT_FAILURES_NOW=1 (experiments/gpu_report.sh sets it), each failure's
    traceback is written the moment the test fails, not in the end-of-run summary: a run cut by
    a time limit (a short GPU job) still shows why its tests failed."""
    if report.failed and os.environ.get("VIVIT_JAX_REPORT_FAILURES_NOW") == "1":
        sys.__stderr__.write(f"\n{report.nodeid} FAILED ({report.when}):\n{report.longreprtext}\n")
        sys.__stderr__.flush()
