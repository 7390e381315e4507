"""XLA compiler options that make ViViT's steps faster on a CPU.

jaxlib 0.10 sends every f32 dot on the CPU through YNNPACK (the XLA option
`xla_cpu_experimental_ynn_fusion_type` lists `individual_dot`). On ViViT's shapes XLA's own Eigen
contraction is faster: on the 2-core CI machine, the (b) benchmark of `experiments/README.md`
trains and infers 10–20% faster with YNNPACK's dots switched off (measured in one process,
alternating the two compilations; see the README for the figures). YNNPACK stays faster on a
large square matmul, which is why this is an option of our jits and not a global setting.

Every jit of the project that runs a model (train, eval, evaluate, predict, benchmark) passes
`compiler_options()`. They are empty (jaxlib's defaults) when

- the default backend is not the CPU (GPU and TPU compilations are untouched), or
- `XLA_FLAGS` already sets `xla_cpu_experimental_ynn_fusion_type` (the user's choice wins), or
- `VIVIT_JAX_XLA_CPU_DEFAULTS=0` is in the environment.
"""

from __future__ import annotations

import os

import jax

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPT_OUT_ENV = "VIVIT_JAX_XLA_CPU_DEFAULTS"


def compiler_options(backend: str | None = None, environ=os.environ) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for a step compiled for `backend` (default: JAX's)."""
    if environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if (backend or jax.default_backend()) != "cpu":
        return None
    user_flags = environ.get("XLA_FLAGS", "")
    options = {k: v for k, v in OPTIONS.items() if f"--{k}=" not in user_flags}
    return options or None
