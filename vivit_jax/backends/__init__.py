"""Backends: what a platform may add to the core, handed to it through one seam.

The core (models, training, evaluation) runs on plain JAX everywhere. A backend adds two things,
taken once by the command line and passed down explicitly:
  fused_attention   a fused attention core for `model.attention_implementation='fused'`
                    (`create_model(..., fused_attention=...)`);
  compiler_options  the options of every `jax.jit` that runs a model.

`for_platform()` picks: on a CPU where the `cpu` extra is installed
(`pip install 'vivit_jax[cpu]'`: OpenBLAS for the compiled attention kernel, mimalloc), the CPU
backend (`vivit_jax.backends.cpu`); else `PLAIN`, nothing added. `VIVIT_JAX_CPU_TUNING=0` keeps
`PLAIN` on a CPU too. The model package never imports a backend.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from collections.abc import Callable

from absl import logging

# The distribution the `cpu` extra adds for the compiled attention kernel: its presence is how
# the extra is recognised.
CPU_EXTRA_MARKER = "scipy-openblas32"


@dataclasses.dataclass(frozen=True)
class Backend:
    """Attributes:
    name: 'jax' (plain) or the backend's name.
    fused_attention: `[N, L, heads, head_dim]` q, k, v -> attention, or None (JAX's).
    compiler_options: `jax.jit(..., compiler_options=...)` for model programs, or None.
    """

    name: str = "jax"
    fused_attention: Callable | None = None
    compiler_options: dict[str, str] | None = None


PLAIN = Backend()


def cpu_extra_installed() -> bool:
    try:
        importlib.metadata.distribution(CPU_EXTRA_MARKER)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def for_platform(platform: str | None = None, *, fused: bool = False) -> Backend:
    """The backend for `platform` (default: JAX's default backend); see the module docstring.

    `fused`: the model will use `attention_implementation='fused'`, so a backend that compiles
    its attention kernel does so now rather than while the model is traced.
    """
    if platform is None:
        import jax

        platform = jax.default_backend()
    if platform != "cpu":
        return PLAIN
    from vivit_jax.backends.cpu import tuning

    if tuning.opted_out(os.environ):
        logging.info("CPU backend turned off (%s=0): plain JAX.", tuning.OPT_OUT_ENV)
        return PLAIN
    if not cpu_extra_installed():
        logging.info(
            "Plain JAX on the CPU; pip install 'vivit_jax[cpu]' adds the compiled attention "
            "kernel and XLA options that make training faster here."
        )
        return PLAIN
    from vivit_jax.backends import cpu

    return cpu.setup(build_kernel=fused)
