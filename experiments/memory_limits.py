"""The largest batch, or the most frames, whose training step fits one device's memory.

Examples (one GPU, bf16):

    # Largest batch of ViViT-B Model 1 at 32x224^2 with fused attention, then its throughput/MFU:
    python experiments/memory_limits.py --variant=spacetime --search=batch --frames=32 \\
        --dtype=bfloat16 --attention=fused

    # How many frames Model 1 takes at batch 1 with fused attention and remat:
    python experiments/memory_limits.py --variant=spacetime --search=frames --batch=1 \\
        --dtype=bfloat16 --attention=fused --remat --start=32 --granularity=16 --max=1024

How: the AdamW training step (`vivit_jax.steps.train_step`, state donated as in `train.py`) is
compiled ahead of time from abstract shapes, so no candidate allocates anything, and XLA's
buffer assignment gives its peak: arguments + outputs - donated aliases + temporaries. The
search doubles from `--start`, then narrows the bracket between the largest size that fits and
the smallest that does not by linear interpolation of those peaks, to a multiple of
`--granularity`. The largest fitting size is then run for real (its compiled executable, no
second compile) to confirm it fits, and timed: clips/s, step time and model FLOPs utilisation
(model FLOPs as `benchmark.py` counts them). `--limit-gib` replaces the device's allocator limit
(required on a CPU, whose devices report none). Nothing here asserts on time; no TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # noqa: E402

from vivit_jax import backends, experiment, steps  # noqa: E402
from vivit_jax.models import SIZES, create_model  # noqa: E402


class Case:
    """One model configuration; `shape(x)` is the input shape with the searched size set to x."""

    def __init__(self, args):
        self.args = args
        self.cfg = benchmark.sized_model_config(
            args.variant, args.size, args.layers, args.attention, args.remat, args.classifier
        )
        self.model = create_model(self.cfg, args.classes, dtype=args.dtype)
        self.tx = optax.adamw(benchmark.LEARNING_RATE)

    def shape(self, x: int) -> tuple[int, ...]:
        a = self.args
        batch, frames = (x, a.frames) if a.search == "batch" else (a.batch, x)
        return (batch, frames, a.resolution, a.resolution, 3)

    def _step(self, model):
        return benchmark.train_step_fn(
            model, self.tx, steps.LossConfig(num_classes=self.args.classes)
        )

    def abstract_inputs(self, x: int):
        shape = self.shape(x)
        init = functools.partial(experiment.init_state, self.model, self.tx, shape[1:])
        batch = dict(
            inputs=jax.ShapeDtypeStruct(shape, jnp.float32),
            label=jax.ShapeDtypeStruct(shape[:1], jnp.int32),
            batch_mask=jax.ShapeDtypeStruct(shape[:1], jnp.float32),
        )
        key = jax.eval_shape(lambda: jax.random.key(1))
        return jax.eval_shape(init, jax.random.key(0)), batch, key

    def compile(self, x: int):
        """(compiled train step, peak bytes by XLA's buffer assignment) for size x."""
        fn = jax.jit(  # compiled as train.py compiles it
            self._step(self.model),
            donate_argnums=0,
            compiler_options=backends.for_platform().compiler_options,
        )
        compiled = fn.lower(*self.abstract_inputs(x)).compile()
        m = compiled.memory_analysis()
        peak = (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
        return compiled, peak

    def model_flops(self, x: int) -> float:
        """Model FLOPs of one step at size x: einsum attention, no remat (as benchmark.py)."""
        counted = create_model(
            benchmark.model_flops_config(self.cfg), self.args.classes, dtype=self.args.dtype
        )
        return benchmark.traced_flops(self._step(counted), *self.abstract_inputs(x))

    def run(self, compiled, x: int, steps_timed: int, log=print):
        """Runs the compiled step on real arrays; seconds of each timed step, last loss.

        Parameters are random normals of the initialiser's shapes (the step's cost does not
        depend on their values; this spares compiling the model's initialiser at this size).
        Each phase is logged as it ends, so a run cut short by a time limit shows where it was.
        """
        t0 = time.perf_counter()
        log(f"  {self.args.search}={x}: running (making inputs and state)")
        shape = self.shape(x)
        rng = np.random.default_rng(0)
        batch = dict(
            inputs=jnp.asarray(rng.uniform(-1, 1, shape).astype(np.float32)),
            label=jnp.asarray(rng.integers(0, self.args.classes, shape[0]), jnp.int32),
            batch_mask=jnp.ones(shape[:1], jnp.float32),
        )
        abstract_params = self.abstract_inputs(x)[0].params

        @jax.jit
        def make_state(key):
            leaves, tree = jax.tree.flatten(abstract_params)
            keys = jax.random.split(key, len(leaves))
            params = jax.tree.unflatten(
                tree,
                [0.02 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)],
            )
            return steps.TrainState(
                step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params)
            )

        state = jax.block_until_ready(make_state(jax.random.key(0)))
        key = jax.random.key(1)
        log(f"  {self.args.search}={x}: state ready at {time.perf_counter() - t0:.1f} s")
        state, metrics = compiled(state, batch, key)  # first step: allocations settle
        jax.block_until_ready(metrics)
        log(f"  {self.args.search}={x}: first step done at {time.perf_counter() - t0:.1f} s")
        times = []
        for _ in range(steps_timed):
            t = time.perf_counter()
            state, metrics = compiled(state, batch, key)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t)
        return times, float(metrics.compute()["loss"])


def _round_down(x: float, g: int) -> int:
    return int(math.floor(x / g)) * g


class ProbeBudgetSpent(Exception):
    pass


def search(
    case: Case,
    limit: int,
    start: int,
    granularity: int,
    cap: int,
    max_probes: int = 10,
    log=print,
):
    """Largest multiple of `granularity` (from `start`, at most `cap`) whose step fits `limit`.

    Returns (largest fitting size or None, {fitting size: its compiled step}, every probe as
    (size, bytes or None when the compiler itself ran out of memory), whether the bracket was
    closed). Stops after `max_probes` compilations with the best size found so far.
    """
    probes: list[tuple[int, int | None]] = []
    compiled_at = {}

    def probe(x):
        if len(probes) >= max_probes:
            raise ProbeBudgetSpent
        t = time.perf_counter()
        try:
            compiled, peak = case.compile(x)
        except Exception as e:  # XLA may refuse a program too large for the device while compiling
            if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                raise
            compiled, peak = None, None
        probes.append((x, peak))
        fits = peak is not None and peak <= limit
        if fits:
            compiled_at[x] = compiled
        shown = f"{peak / 2**30:8.2f} GiB" if peak is not None else "compiler out of memory"
        squeezed = " (squeezed by XLA's rematerialisation)" if fits and _squeezed(probes, x) else ""
        log(
            f"  {case.args.search}={x:<6} peak {shown} {'fits' if fits else 'does not fit'}"
            f"{squeezed} (compiled in {time.perf_counter() - t:.0f} s)"
        )
        return fits

    lo = hi = None
    try:
        lo, hi = _bracket(probe, probes, limit, start, granularity, cap)
    except ProbeBudgetSpent:
        fitted = [x for x, b in probes if b is not None and b <= limit]
        lo = max(fitted, default=None)
        log(f"  stopped after {max_probes} compilations")
        return lo, compiled_at, probes, False
    return lo, compiled_at, probes, True


def _squeezed(probes, x) -> bool:
    """Whether size x's peak is no larger than a smaller size's: XLA's own rematerialisation
    pass (on by default on a GPU) recomputed activations to fit it under the limit. Such a size
    fits but runs slower, and peaks from there on no longer grow along a line."""
    peaks = dict(probes)
    return any(s < x and b is not None and b >= peaks[x] for s, b in probes)


def _bracket(probe, probes, limit, start, granularity, cap):
    """Doubling / extrapolation up, then interpolation inside the bracket; returns (lo, hi)."""
    lo = hi = None  # largest size that fits, smallest that does not
    x = start
    while True:
        if probe(x):
            lo = x
            if x >= cap:
                break
            fitted = sorted((s, b) for s, b in probes if b is not None and b <= limit)
            if len(fitted) >= 2 and not _squeezed(probes, x):
                # extrapolate the line through the last two fitting sizes (x is the larger, and
                # not squeezed: its peak is above the other's)
                (x0, b0), (x1, b1) = fitted[-2:]
                guess = _round_down(x1 + (limit - b1) * (x1 - x0) / (b1 - b0), granularity)
                x = min(cap, max(x1 + granularity, guess))
            else:  # first step, or a squeezed peak (the line says nothing there): double
                x = min(cap, 2 * x)
        else:
            hi = x
            break
    if lo is None:  # even `start` does not fit: halve down to the granularity
        while hi > granularity:
            x = max(granularity, _round_down(hi / 2, granularity))
            if probe(x):
                lo = x
                break
            hi = x
        if lo is None:
            return None, hi
    while hi is not None and hi - lo > granularity:  # narrow the bracket by interpolation
        b_lo, b_hi = dict(probes)[lo], dict(probes)[hi]
        if b_hi is None or _squeezed(probes, lo):  # no line to interpolate on: bisect
            guess = _round_down((lo + hi) / 2, granularity)
        else:
            guess = _round_down(lo + (limit - b_lo) * (hi - lo) / max(b_hi - b_lo, 1), granularity)
        x = min(hi - granularity, max(lo + granularity, guess))
        if probe(x):
            lo = x
        else:
            hi = x
    return lo, hi


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--search", choices=["batch", "frames"], required=True)
    ap.add_argument("--variant", default="spacetime")
    ap.add_argument("--size", default="B", choices=sorted(SIZES))
    ap.add_argument("--layers", type=int, default=0, help="override the size's number of layers")
    ap.add_argument("--frames", type=int, default=32, help="fixed frames (batch search)")
    ap.add_argument("--batch", type=int, default=1, help="fixed batch (frames search)")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--classifier", default="token")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--attention", default="fused", choices=["einsum", "fused"])
    ap.add_argument("--start", type=int, default=8)
    ap.add_argument("--granularity", type=int, default=8)
    ap.add_argument("--max", type=int, default=4096, help="largest size tried")
    ap.add_argument("--limit-gib", type=float, default=0.0, help="memory limit (default: device)")
    ap.add_argument("--max-probes", type=int, default=10, help="compilations at most")
    ap.add_argument("--run-steps", type=int, default=3, help="timed steps at the largest size")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="as in benchmark.py")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.search == "frames" and (args.start % 2 or args.granularity % 2):
        ap.error("--start and --granularity must be even for a frames search (2-frame tubelets)")

    device = jax.devices()[0]
    limit = int(args.limit_gib * 2**30) or (device.memory_stats() or {}).get("bytes_limit")
    if not limit:
        ap.error(f"{device} reports no memory limit: give --limit-gib")
    case = Case(args)
    say = functools.partial(print, flush=True)  # progress shows even when a time limit cuts the run
    fixed = f"frames={args.frames}" if args.search == "batch" else f"batch={args.batch}"
    print(
        f"{device.device_kind}: allocator limit {limit / 2**30:.2f} GiB; {args.variant}-{args.size}"
        f" {fixed} {args.resolution}px {args.dtype} attention={args.attention} "
        f"remat={args.remat}; searching {args.search} from {args.start} (max {args.max})",
        flush=True,
    )
    best, compiled_at, probes, closed = search(
        case,
        limit,
        args.start,
        args.granularity,
        args.max,
        args.max_probes,
        log=say,
    )
    result = dict(
        device_kind=device.device_kind,
        limit_bytes=limit,
        search=args.search,
        config={k: v for k, v in vars(args).items() if k != "json"},
        probes=probes,
        largest=best,
        at_cap=best == args.max,
        bracket_closed=closed,
    )
    fitted = sorted((x, b) for x, b in probes if b is not None and b <= limit)
    if result["at_cap"] and len(fitted) >= 2:  # where the line through the last two would cross
        (x0, b0), (x1, b1) = fitted[-2:]
        if b1 > b0:
            result["extrapolated_largest"] = int(x1 + (limit - b1) * (x1 - x0) / (b1 - b0))
            print(
                f"  {args.search}={args.max} (the cap) fits; the peaks' line reaches the limit at "
                f"about {result['extrapolated_largest']} (extrapolated, not compiled)",
                flush=True,
            )
    if best is None:
        print(f"nothing fits: {args.search}={args.start} and smaller exceed the limit")
    elif args.run_steps > 0:
        ran = None
        for x in sorted(compiled_at, reverse=True):  # the estimate fits; confirm by running
            try:
                times, loss = case.run(compiled_at[x], x, args.run_steps, log=say)
                ran = x
                break
            except Exception as e:
                if "RESOURCE_EXHAUSTED" not in str(e):
                    raise
                print(f"  {args.search}={x}: XLA's estimate fits, but running it ran out of memory")
                result.setdefault("ran_out_of_memory_when_run", []).append(x)
        if ran is None:
            raise SystemExit("every size that XLA estimated to fit ran out of memory when run")
        best = result["largest"] = ran
        step_s = statistics.median(times)
        flops = case.model_flops(best)
        peak_flops = args.peak_tflops * 1e12 or benchmark.datasheet_peak_flops(args.dtype, device)
        stats = device.memory_stats() or {}
        result.update(
            step_s=step_s,
            repeats_s=times,
            clips_per_s=case.shape(best)[0] / step_s,
            model_tflops_per_s=flops / step_s / 1e12,
            mfu=flops / step_s / peak_flops if peak_flops else None,
            peak_bytes_in_use=stats.get("peak_bytes_in_use"),
            loss=loss,
        )
        mfu = f", MFU {100 * result['mfu']:.1f}%" if result["mfu"] else ""
        used = stats.get("peak_bytes_in_use")
        print(
            f"largest {args.search} that fits: {best}{' (the --max cap)' if result['at_cap'] else ''};"
            f" ran {args.run_steps} steps: {step_s * 1e3:.1f} ms/step, "
            f"{result['clips_per_s']:.2f} clips/s, {result['model_tflops_per_s']:.1f} model "
            f"TFLOP/s{mfu}"
            + (f", allocator peak {used / 2**30:.1f} GiB" if used else "")
            + f", loss {loss}",
            flush=True,
        )
    else:
        print(f"largest {args.search} that fits: {best}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
