"""How long the training state's initialisation takes to compile and run, two ways.

    python experiments/init_compile.py --variant=spacetime --size=B --frames=32 --resolution=224

Every training process (and every benchmark runner) first jits `experiment.init_state`: the
model's random initialisation and the optimiser's zeros. On an H200 that compile took
~30 s for ViViT-B, longer than the training step's own (~18 s): the program is threefry code for
each of the ~150 parameter arrays (7.2 MB of HLO text; 7.6 s to compile on a 2-core CPU). JAX's
`jax_threefry_gpu_kernel_lowering` lowers threefry to one GPU kernel instead ("faster compile
times at a potential runtime memory cost", by its help text). This script compiles and runs the
initialisation with the option off (JAX's default) and on, and says whether the two give
bitwise the same parameters (they must, to be used for training). On a CPU the option does
nothing. Does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # noqa: E402  (experiments/, beside this file)

from vivit_jax import experiment  # noqa: E402
from vivit_jax.models import SIZES, create_model  # noqa: E402


def time_init(model, input_shape, kernel_lowering: bool) -> dict:
    """Seconds to lower, compile and run the state's initialisation, and its parameters."""
    init = jax.jit(functools.partial(experiment.init_state, model, optax.adamw(1e-4), input_shape))
    option = "jax_threefry_gpu_kernel_lowering"  # a config option; no public context manager
    before = getattr(jax.config, option)
    jax.config.update(option, kernel_lowering)
    try:
        t0 = time.perf_counter()
        lowered = init.lower(jax.random.key(0))
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()
        state = jax.block_until_ready(compiled(jax.random.key(0)))
        t3 = time.perf_counter()
    finally:
        jax.config.update(option, before)
    return dict(
        lower_s=t1 - t0,
        compile_s=t2 - t1,
        run_s=t3 - t2,
        hlo_chars=len(compiled.as_text()),
        params=jax.device_get(state.params),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="spacetime")
    ap.add_argument("--size", default="B", choices=sorted(SIZES))
    ap.add_argument("--layers", type=int, default=0, help="override the size's number of layers")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--attention", default="fused")
    args = ap.parse_args()
    cfg = benchmark.sized_model_config(
        args.variant, args.size, args.layers, args.attention, False, "token"
    )
    model = create_model(cfg, 400, dtype=args.dtype)
    shape = (args.frames, args.resolution, args.resolution, 3)
    print(f"{jax.devices()[0].device_kind}: {args.variant}-{args.size} init, input {shape}")
    results = {}
    for lowering in (False, True):
        r = results[lowering] = time_init(model, shape, lowering)
        print(
            f"  jax_threefry_gpu_kernel_lowering={lowering!s:<5}  lower {r['lower_s']:6.1f} s  "
            f"compile {r['compile_s']:6.1f} s  run {r['run_s']:6.2f} s  "
            f"HLO {r['hlo_chars'] / 1e6:.1f} MB",
            flush=True,
        )
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(results[False]["params"]), jax.tree.leaves(results[True]["params"])
        )
    )
    print(f"  the same parameters, bit for bit: {same}")
    if not same:
        sys.exit("the kernel lowering changed the initial parameters")


if __name__ == "__main__":
    main()
