"""Where JAX's persistent compilation cache lives for the command line (`--compilation_cache`).

A rerun (a resume, the same config in another workdir, an evaluation of a trained run) loads its
compiled programs from the cache instead of compiling them again. JAX keys each entry on the
program, the devices, the compiler options and the versions, so one directory serves every run
and every host; by default it stores programs whose compilation took at least a second
(`jax_persistent_cache_min_compile_time_secs`).
"""

from __future__ import annotations

import os

# The project's cache directory (also where the CPU backend keeps its compiled kernel).
CACHE_ENV = "VIVIT_JAX_CACHE_DIR"

FLAG_HELP = (
    "Directory of JAX's persistent compilation cache, so that a rerun loads its compiled "
    "programs instead of compiling them. Default: $JAX_COMPILATION_CACHE_DIR if set, else "
    "jax_cache in $VIVIT_JAX_CACHE_DIR (~/.cache/vivit_jax); 'none': no cache."
)


def project_cache_dir() -> str:
    """`$VIVIT_JAX_CACHE_DIR`, default `~/.cache/vivit_jax`."""
    return os.environ.get(CACHE_ENV) or os.path.expanduser("~/.cache/vivit_jax")


def directory(flag: str | None) -> str | None:
    """The cache directory for `--compilation_cache=flag` (None: the default); None means off."""
    if flag is not None:
        return None if flag.lower() in ("", "none") else os.path.abspath(os.path.expanduser(flag))
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    return os.path.join(project_cache_dir(), "jax_cache")


def enable(flag: str | None) -> None:
    """Points JAX at `directory(flag)`; call it before anything is compiled."""
    import jax

    jax.config.update("jax_compilation_cache_dir", directory(flag))
