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
"""

from __future__ import annotations

import os

import jax

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPT_OUT_ENV = "VIVIT_JAX_CPU_TUNING"


def _opted_out(environ) -> bool:
    return environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def compiler_options(backend: str | None = None, environ=os.environ) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a step compiled for `backend` (default: JAX's)."""
    if _opted_out(environ):
        return None
    if (backend or jax.default_backend()) != "cpu":
        return None
    user_flags = environ.get("XLA_FLAGS", "")
    options = {k: v for k, v in OPTIONS.items() if f"--{k}=" not in user_flags}
    return options or None
