"""Attention alone on a CPU: einsum, XLA's blocked path and the compiled kernel, side by side.

    python experiments/attention_speed.py                      # ViViT's shapes (below)
    python experiments/attention_speed.py --shapes=2x785x12x64 --repeats=15

Times the forward pass and forward + backward (the VJP of all three inputs) of each
implementation on `[N, L, heads, head_dim]` float32 inputs, alternating between them, medians
of `--repeats` (ms). The implementations are the ones `attention_implementation` picks from:
`models.attention.einsum_attention` (stores the `[N, heads, L, L]` probabilities), the CPU
backend's `blocked.head_blocked_attention` (XLA, a few heads at a time) and `attention.attention` (the
compiled kernel, built on first use). Compiled with vivit_jax's XLA:CPU options, as the model's
steps are. Does not import TensorFlow.

`--block-rows=0,64,128` times the kernel once per row-block size instead of at its default
(`cpu_attention.BLOCK_ROWS`; 0: all of a pair's rows in one block), as columns `kernel/64`, ...
`--openblas` adds the kernel with its products all through OpenBLAS
(`cpu_attention.TILE_FROM_TOKENS = 0`) as a column `kernel/openblas` beside the default kernel
(its own tiled products at head dim 64 from `TILE_FROM_TOKENS` tokens on).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.backends.cpu import attention as cpu_attention
from vivit_jax.backends.cpu import blocked, tuning
from vivit_jax.models.attention import einsum_attention

# benchmark.py's presets a, b and c (65, 393 and 785 tokens), Model 2's spatial encoder at 8×224²
# with batch 2 (8 time steps × 2 clips), Model 3's temporal attention (196 positions × 2 clips).
DEFAULT_SHAPES = "8x65x3x64,4x393x6x64,2x785x12x64,16x197x12x64,392x17x12x64"


def _fresh(fn):
    """`fn` as a new function object: `jax.jit` reuses a function's trace, and each column's
    settings are read while tracing (with one function object, every kernel column's forward
    would run the first column's program)."""
    return lambda *a: fn(*a)


def _vjp_of(fn):
    def run(q, k, v, d_out):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(d_out)

    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES, help="NxLxHxD, comma-separated")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--block-rows",
        default="",
        help="comma-separated kernel row blocks to compare (0: one block); default: the kernel's",
    )
    parser.add_argument(
        "--openblas",
        action="store_true",
        help="also time the kernel with all its products through OpenBLAS (no tiles)",
    )
    args = parser.parse_args(argv)
    if jax.default_backend() != "cpu":
        print("attention_speed.py compares CPU implementations; JAX runs on", jax.default_backend())
        return 1
    impls = {"einsum": einsum_attention, "blocked": blocked.head_blocked_attention}
    settings = {}  # implementation name -> cpu_attention attributes it compiles with
    if cpu_attention.available():
        for rows in [int(b) for b in args.block_rows.split(",") if b] or [None]:
            name = "kernel" if rows is None else f"kernel/{rows}"
            impls[name] = cpu_attention.attention
            settings[name] = {} if rows is None else {"BLOCK_ROWS": rows}
        if args.openblas:
            impls["kernel/openblas"] = cpu_attention.attention
            settings["kernel/openblas"] = {"TILE_FROM_TOKENS": 0}
    else:
        print("the compiled kernel is unavailable here (see the warning above)")
    options = tuning.compiler_options()
    rng = np.random.default_rng(0)
    print(f"{'shape':>18}  " + "  ".join(f"{n + ' fwd':>12} {n + ' f+b':>12}" for n in impls))
    for text in args.shapes.split(","):
        shape = tuple(int(x) for x in text.lower().split("x"))
        q, k, v, d_out = (jnp.asarray(rng.standard_normal(shape, np.float32)) for _ in range(4))
        runs, a4 = {}, (q, k, v, d_out)
        for name, fn in impls.items():
            defaults = {a: getattr(cpu_attention, a) for a in settings.get(name, {})}
            for attribute, value in settings.get(name, {}).items():  # read while tracing
                setattr(cpu_attention, attribute, value)
            try:
                for mode, f, a in (("fwd", _fresh(fn), (q, k, v)), ("f+b", _vjp_of(fn), a4)):
                    compiled = jax.jit(f).lower(*a).compile(compiler_options=options)
                    runs[name, mode] = (compiled, a)
            finally:
                for attribute, value in defaults.items():
                    setattr(cpu_attention, attribute, value)
        times = {key: [] for key in runs}
        for _ in range(args.repeats):
            for key, (fn, a) in runs.items():
                jax.block_until_ready(fn(*a))  # lead-in: caches and threads warm for this one
                start = time.perf_counter()
                jax.block_until_ready(fn(*a))
                times[key].append(time.perf_counter() - start)
        cells = [f"{np.median(times[key]) * 1e3:12.2f}" for key in runs]
        print(
            f"{text:>18}  " + "  ".join(" ".join(cells[i : i + 2]) for i in range(0, len(cells), 2))
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
