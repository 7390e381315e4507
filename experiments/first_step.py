"""Time to first step, cold and warm: the same command in two fresh processes sharing one new
persistent compilation cache (JAX_COMPILATION_CACHE_DIR), wall seconds of each.

    python experiments/first_step.py -- python experiments/benchmark.py --size=B --frames=32 \\
        --dtype=bfloat16 --variant=spacetime --batch=8 --attention=fused --train-only \\
        --repeats=1 --steps=1 --warmup=1

The first process compiles everything (the state's initialisation, the training step) and fills
the cache; the second loads what the first stored, which is what `python -m vivit_jax.main`
does on a rerun (its `--compilation_cache` is on by default). The command's wall time includes
its imports and its timed steps, so the warm figure bounds the time to first step from above.
Prints one line per process and the cache's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="A new cache directory (default: a temp dir).")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to time")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command after --")
    cache = args.cache or tempfile.mkdtemp(prefix="vivit_first_step_")
    if os.path.isdir(cache) and os.listdir(cache):
        ap.error(f"--cache={cache} is not empty: the cold run needs an empty cache")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}
    for run in ("cold", "warm"):
        start = time.perf_counter()
        done = subprocess.run(command, env=env)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{run} run failed with exit status {done.returncode}")
        files = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs]
        size = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"first-step {run}: {seconds:.1f} s wall; cache {len(files)} files, {size:.1f} MiB")


if __name__ == "__main__":
    main()
