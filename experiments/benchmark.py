"""Training and inference throughput of vivit_jax, optionally side by side with HuggingFace's ViViT.

Examples:

    # The three CPU presets (PRESETS) against transformers' VivitForVideoClassification
    # (needs `pip install torch==2.13.0 transformers` in this environment):
    python experiments/benchmark.py --preset=a,b,c --peer --json=/tmp/bench.json

    # Any variant / size on whatever device JAX sees (e.g. a GPU), bf16, both attention
    # implementations side by side:
    python experiments/benchmark.py --variant=factorized_encoder --size=B --frames=32 \
        --resolution=224 --batch=8 --dtype=bfloat16 --attention=einsum,fused

Reports clips/s, step time, peak memory (GPU) and achieved FLOP/s as a fraction of the device's
float32 (or bf16) matrix-multiply peak, measured in the same run, and as model FLOPs utilisation
(MFU) against the device's datasheet peak where it is known (`--peak-tflops` to give one).
FLOPs are model FLOPs: `traced_flops` of the einsum-attention, no-remat program (a fused
attention kernel's work is not visible to a FLOP counter, and remat's recomputation is not model
work). That program's last block computes the class token alone (`model.last_block_cls_only`),
so the work it skips is not counted either (the paper's tables count every token).
Runs alternate between runners (and frameworks), several repeats, each timed block after one
untimed step of its runner (`--lead-in`), and report medians; nothing here asserts on time. The
peer runs in a process of its own with glibc's malloc defaults (`--peer-malloc`), driven step by
step from this one (`PeerProcess`); on a CPU this process runs as `vivit_jax.main` does: it
restarts itself with mimalloc as its malloc, keeping freed memory (`--malloc=mimalloc`), and
sets glibc's malloc to keep freed memory (`--keep-freed-memory=on`; moot under mimalloc).
Does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import roofline

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import profile_summary  # noqa: E402  (experiments/, beside this file)

from vivit_jax import backends, experiment, sharding, steps  # noqa: E402
from vivit_jax.backends.cpu import tuning as cpu_tuning  # noqa: E402
from vivit_jax.models import SIZES, create_model  # noqa: E402
from vivit_jax.models.config import ATTENTION_IMPLEMENTATIONS  # noqa: E402
from vivit_jax.tools.summary import count_params  # noqa: E402

# The CPU comparison presets: Model 1, token classifier, 2x16x16 tubelets, float32.
PRESETS = {
    "a": dict(
        frames=8, resolution=64, hidden=192, layers=12, heads=3, mlp=768, classes=10, batch=8
    ),
    "b": dict(
        frames=16, resolution=112, hidden=384, layers=12, heads=6, mlp=1536, classes=400, batch=4
    ),
    "c": dict(
        frames=8,
        resolution=224,
        **{k: v for k, v in zip(("hidden", "layers", "heads", "mlp"), SIZES["B"].values())},
        classes=400,
        batch=2,
    ),
}


def model_config(
    variant: str,
    hidden,
    layers,
    heads,
    mlp,
    attention="einsum",
    remat=False,
    classifier="token",
    last_block_cls_only=True,
):
    c = dict(
        attention_config=dict(type=variant),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        mlp_dim=mlp,
        patches=dict(size=(16, 16, 2)),
        classifier=classifier,
        representation_size=None,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        attention_implementation=attention,
        remat=remat,
        last_block_cls_only=last_block_cls_only,
    )
    if variant == "factorized_encoder":
        c["spatial_transformer"] = dict(num_layers=layers, num_heads=heads, mlp_dim=mlp)
        c["temporal_transformer"] = dict(num_layers=4, num_heads=heads, mlp_dim=mlp)
    return ml_collections.ConfigDict(c)


# Dense (no sparsity) matrix-multiply peaks by the vendors' datasheets, TFLOP/s, keyed by a
# substring of `device.device_kind`. Only parts whose kind string names one product.
DATASHEET_PEAK_TFLOPS = {
    "bfloat16": {"H100 80GB HBM3": 989.4, "H200": 989.4, "A100": 312.0},
    "float32": {"H100 80GB HBM3": 66.9, "H200": 66.9, "A100": 19.5},
}


LEARNING_RATE = 1e-4


def train_step_fn(model, tx, loss_config):
    """The project's `steps.train_step` bound to `model`, optimiser `tx` and a constant LR."""
    return functools.partial(
        steps.train_step,
        model=model,
        tx=tx,
        schedule=lambda step: jnp.full((), LEARNING_RATE),
        loss_config=loss_config,
    )


def sized_model_config(
    variant: str,
    size: str,
    layers: int,
    attention: str,
    remat: bool,
    classifier: str,
    **overrides,
) -> ml_collections.ConfigDict:
    """`model_config` for one of `SIZES` (Ti/S/B/L/H), with `layers` blocks if non-zero."""
    s = SIZES[size]
    return model_config(
        variant,
        s["hidden_size"],
        layers or s["num_layers"],
        s["num_heads"],
        s["mlp_dim"],
        attention,
        remat,
        classifier,
        **overrides,
    )


def model_flops_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config whose program's FLOPs count as `cfg`'s model FLOPs.

    Einsum attention (a cuDNN custom call's work is invisible to FLOP counters) and no remat
    (recomputation is not model work); otherwise the same model.
    """
    return ml_collections.ConfigDict(
        dict(cfg.to_dict(), attention_implementation="einsum", remat=False)
    )


def datasheet_peak_flops(dtype: str, device=None) -> float | None:
    """The device's datasheet matmul peak in FLOP/s for `dtype`, or None if not in the table."""
    kind = (device or jax.devices()[0]).device_kind
    for name, tflops in DATASHEET_PEAK_TFLOPS.get(dtype, {}).items():
        if name in kind:
            return tflops * 1e12
    return None


def matmul_peak_flops(
    dtype=jnp.float32, n: int | None = None, repeats: int = 5
) -> dict[str, float]:
    """Best observed FLOP/s (2 per multiply-add) of an n x n matmul, per set of compiler options.

    n defaults to 2048 on a CPU and 8192 on an accelerator (a 2048^2 product is too short there
    to reach the peak).

    On a CPU the matmul is compiled twice: with vivit_jax's XLA:CPU options (Eigen dots, faster
    on ViViT's shapes) and with jaxlib's defaults (YNNPACK dots, faster on this square matmul);
    the device's peak is the larger of the two.
    """
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)  # random data: GPUs clock lower on it
    lowered = jax.jit(lambda x: x @ x).lower(a)
    found = {}
    for label, backend in _backends("both").items():
        f = lowered.compile(compiler_options=backend.compiler_options)
        f(a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            f(a).block_until_ready()
            best = min(best, time.perf_counter() - t)
        found[label] = 2 * n**3 / best
    return found


def _backends(which: str) -> dict[str, backends.Backend]:
    """The backends to compare, by label: plain JAX ('vivit_jax') and/or the CPU backend
    ('vivit_jax[cpu]', the `cpu` extra); 'auto' = the one the command lines pick here."""
    if which == "auto":
        chosen = backends.for_platform(fused=True)
        return {"vivit_jax" if chosen is backends.PLAIN else "vivit_jax[cpu]": chosen}
    sets = {}
    if which in ("plain", "both"):
        sets["vivit_jax"] = backends.PLAIN
    if which in ("cpu", "both"):
        from vivit_jax.backends import cpu

        sets["vivit_jax[cpu]"] = cpu.setup()
    return sets


class JaxRunner:
    """vivit_jax: the project's own `steps.train_step` (AdamW) and a jitted forward.

    With `devices` > 1 the batch is split over that many devices (data parallel, parameters and
    optimiser state replicated), as `train.py` does on a mesh; on a CPU these are XLA host
    devices (`--xla_force_host_platform_device_count`), one execution thread each.
    """

    def __init__(
        self,
        cfg,
        num_classes,
        shape,
        dtype,
        name="vivit_jax",
        backend=backends.PLAIN,
        devices=1,
        flops=None,
    ):
        self.name = name
        self.model = create_model(
            cfg, num_classes, dtype=dtype, fused_attention=backend.fused_attention
        )
        rng = np.random.default_rng(0)
        self.x = jnp.asarray(rng.uniform(-1, 1, shape).astype(np.float32))
        self.batch = dict(
            inputs=self.x,
            label=jnp.asarray(rng.integers(0, num_classes, shape[0]), jnp.int32),
            batch_mask=jnp.ones(shape[0], jnp.float32),
        )
        tx = optax.adamw(LEARNING_RATE)
        init = functools.partial(experiment.init_state, self.model, tx, shape[1:])
        self.state = jax.jit(init)(jax.random.key(0))
        params = self.state.params
        self.num_params = count_params(params)
        self.rng = jax.random.key(1)
        loss_cfg = steps.LossConfig(num_classes=num_classes)
        step = train_step_fn(self.model, tx, loss_cfg)
        forward = lambda p, v: self.model.apply({"params": p}, v, train=False)  # noqa: E731
        # Model FLOPs (`model_flops_config`) of the whole batch, from the unpartitioned programs,
        # by mode; the same for every runner of a case with the same `last_block_cls_only`, so
        # `run_case` passes the first one's to the others as `flops`.
        self.flops = flops
        if flops is None:
            counted = create_model(model_flops_config(cfg), num_classes, dtype=dtype)
            count_step = train_step_fn(counted, tx, loss_cfg)
            count_fwd = lambda p, v: counted.apply({"params": p}, v, train=False)  # noqa: E731
            self.flops = dict(
                train=traced_flops(count_step, self.state, self.batch, self.rng),
                infer=traced_flops(count_fwd, params, self.x),
            )
        opts = dict(compiler_options=backend.compiler_options)
        if devices > 1:
            mesh = sharding.create_mesh(1, jax.devices()[:devices])
            data, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
            self.x, self.batch = jax.device_put((self.x, self.batch), data)
            self.state, self.rng = jax.device_put((self.state, self.rng), repl)
            loss_cfg = dataclasses.replace(
                loss_cfg, batch_sharding=sharding.compute_batch_sharding(mesh)
            )
            step = functools.partial(step, loss_config=loss_cfg)
            self.infer = jax.jit(forward, in_shardings=(repl, data), **opts)
            opts.update(in_shardings=(repl, data, repl), out_shardings=(repl, repl))
        else:
            self.infer = jax.jit(forward, **opts)
        self.train = jax.jit(step, donate_argnums=0, **opts)  # compiled by the warm-up steps

    def train_step(self):
        self.state, metrics = self.train(self.state, self.batch, self.rng)
        jax.block_until_ready(metrics)

    def infer_step(self):
        self.infer(self.state.params, self.x).block_until_ready()


def traced_flops(fn, *args) -> float:
    """FLOPs of `fn(*args)` (arrays or `jax.ShapeDtypeStruct`s), 2 per multiply-add.

    JAX's roofline count of the traced program (`jax.experimental.roofline`, its
    `unfused_flops`: matmuls and element-wise work). Backend independent: XLA's own cost analysis
    of a lowering is unavailable on the GPU plugin. On the CPU the two agree within 0.05% for
    ViViT's forward pass and training step.
    """
    return float(roofline.roofline(fn)(*args)[1].unfused_flops)


class TorchRunner:
    """HuggingFace `VivitForVideoClassification` on the same config (the PyTorch peer)."""

    name = "transformers"

    def __init__(self, p, shape):
        import torch
        import transformers

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count())
        self.torch = torch
        config = transformers.VivitConfig(
            image_size=p["resolution"],
            num_frames=p["frames"],
            tubelet_size=[2, 16, 16],
            hidden_size=p["hidden"],
            num_hidden_layers=p["layers"],
            num_attention_heads=p["heads"],
            intermediate_size=p["mlp"],
            hidden_act="gelu_fast",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            layer_norm_eps=1e-6,
            num_labels=p["classes"],
        )
        self.model = transformers.VivitForVideoClassification(config)
        b, t, h, w, c = shape
        self.x = torch.rand(b, t, c, h, w) * 2 - 1
        self.y = torch.randint(0, p["classes"], (b,))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.attn = getattr(self.model.config, "_attn_implementation", "?")

    def train_step(self):
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(pixel_values=self.x).logits
        loss = self.torch.nn.functional.cross_entropy(logits, self.y)
        loss.backward()
        self.opt.step()

    def infer_step(self):
        self.model.eval()
        with self.torch.inference_mode():
            self.model(pixel_values=self.x)


def peer_environ(environ, malloc: str) -> dict[str, str]:
    """The peer's process environment: `environ` without vivit_jax's allocator settings (glibc's
    huge-page tunable, mimalloc's preload and options), then, for `malloc="mimalloc"`, with the
    mimalloc that `cpu_tuning.fast_malloc_environ` gives vivit_jax."""
    env = {k: v for k, v in environ.items() if k not in cpu_tuning.MIMALLOC_OPTIONS}
    tunables = ":".join(
        t
        for t in env.pop("GLIBC_TUNABLES", "").split(":")
        if t and cpu_tuning.HUGE_PAGES_TUNABLE_NAME not in t
    )
    preload = " ".join(p for p in env.pop("LD_PRELOAD", "").split() if "libmimalloc" not in p)
    env.update({k: v for k, v in (("GLIBC_TUNABLES", tunables), ("LD_PRELOAD", preload)) if v})
    if malloc == "mimalloc":
        library = cpu_tuning.mimalloc_library()
        if library is None:
            raise RuntimeError(
                f"--peer-malloc=mimalloc: mimalloc is not installed "
                f"(pip install {cpu_tuning.MIMALLOC_DISTRIBUTION})."
            )
        env = cpu_tuning.mimalloc_environ(env, library)
    return env


def _peer_worker(conn, p, shape):
    """The peer's process: builds a `TorchRunner`, then runs one step per request."""
    try:
        runner = TorchRunner(p, shape)
        conn.send(
            dict(
                attention=runner.attn,
                malloc=cpu_tuning.malloc_in_use(),
                glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
            )
        )
        while (mode := conn.recv()) is not None:
            getattr(runner, f"{mode}_step")()
            conn.send("done")
    except Exception as e:  # reported by the parent, which raises it
        conn.send(f"{type(e).__name__}: {e}")


class PeerProcess:
    """The peer in a process of its own, driven step by step from this one (`measure` alternates
    it with vivit_jax's runners as before; a step's time includes a pipe round trip, ~0.1 ms).

    Each framework runs as its users run it: vivit_jax under `vivit_jax.main`'s process settings
    (`--malloc`, `--keep-freed-memory`), the peer under glibc's defaults: its environment is this
    one without the huge-page tunable, mimalloc's preload and options. `malloc="mimalloc"` gives
    the peer vivit_jax's mimalloc instead (`--peer-malloc=mimalloc`), to show what the allocator
    alone is worth to it. Why a process of its own: in one shared process, glibc's huge-page
    tunable (set for vivit_jax) made the peer slower and its steps bimodal, and each framework
    paid for the other's use of memory.
    """

    name = TorchRunner.name
    TIMEOUT_S = 3600

    def __init__(self, p, shape, malloc: str = "default"):
        import multiprocessing

        # "spawn": a fresh interpreter, without this one's JAX threads and malloc settings.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_peer_worker, args=(child, p, shape), daemon=True)
        saved = dict(os.environ)
        os.environ.clear()  # the spawned interpreter's environment
        os.environ.update(peer_environ(saved, malloc))
        try:
            self._proc.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        child.close()
        self.info = self._receive()

    def _receive(self):
        if not self._conn.poll(self.TIMEOUT_S):
            raise RuntimeError(f"the peer's process sent nothing for {self.TIMEOUT_S} s")
        try:
            out = self._conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the peer's process exited (code {self._proc.exitcode}); is torch installed?"
            ) from None
        if isinstance(out, str) and out != "done":
            raise RuntimeError(f"the peer's process failed: {out}")
        return out

    def train_step(self):
        self._conn.send("train")
        self._receive()

    def infer_step(self):
        self._conn.send("infer")
        self._receive()

    def close(self):
        self._conn.send(None)
        self._proc.join(60)


def _time(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def measure(
    runners, mode: str, repeats: int, steps_per_repeat: int, warmup: int, settle=0.5, lead_in=1
):
    """Per runner: the seconds per step of every repeat, alternating runners within repeats.

    Each timed block starts after `settle` idle seconds, a precaution: both frameworks' worker
    threads may keep spinning for a while after their work (OpenMP's and Eigen's wait
    policies), which would be charged to whichever runner comes next (not shown to matter:
    bimodal step times came from glibc's huge-page tunable with both frameworks in one
    process). Each timed block also follows `lead_in` untimed steps of its runner: a step that
    comes straight after the other framework's pays for the caches (and, in one shared process,
    the memory) that framework used (measured: up to 50% slower on preset c).
    """
    for r in runners:
        for _ in range(warmup):
            getattr(r, f"{mode}_step")()
    times = {r.name: [] for r in runners}
    for i in range(repeats):
        order = runners if i % 2 == 0 else runners[::-1]
        for r in order:
            time.sleep(settle)
            for _ in range(lead_in):
                getattr(r, f"{mode}_step")()
            times[r.name].append(_time(getattr(r, f"{mode}_step"), steps_per_repeat))
    return times


def profile_steps(runner, mode: str, steps: int) -> dict:
    """Kernel time of `steps` steps of `runner` by kind (`profile_summary`), printed and returned.

    Traced after the timed repeats (the runner is compiled and warm); the trace itself is
    deleted once summarised.
    """
    with tempfile.TemporaryDirectory(prefix="vivit_jax_profile_") as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                getattr(runner, f"{mode}_step")()
        summary = profile_summary.summarize(trace_dir)
    summary["steps"] = steps
    print(f"profile of {runner.name}, {mode}, {steps} steps:", flush=True)
    print(profile_summary.format_summary(summary, steps), flush=True)
    return summary


def peak_memory_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def run_case(name, p, args, peak):
    shape = (p["batch"], p["frames"], p["resolution"], p["resolution"], 3)
    jax_runners = []
    flops = {}  # by --last-block value: the runners' model FLOPs differ only by it
    for n, attention, last_block, (label, backend) in itertools.product(
        args.devices, args.attention, args.last_block, _backends(args.backend).items()
    ):
        cfg = model_config(
            p.get("variant", "spacetime"),
            p["hidden"],
            p["layers"],
            p["heads"],
            p["mlp"],
            attention,
            args.remat,
            p.get("classifier", "token"),
            last_block_cls_only=last_block == "cls",
        )
        if len(args.attention) > 1:
            label += f" {attention}"
        if len(args.last_block) > 1:
            label += f" last block: {last_block}"
        runner = JaxRunner(
            cfg,
            p["classes"],
            shape,
            args.dtype,
            name=label + ("" if n == 1 else f" x{n} devices"),
            backend=backend,
            devices=n,
            flops=flops.get(last_block),
        )
        flops[last_block] = runner.flops
        jax_runners.append(runner)
    runners = list(jax_runners)
    if args.peer:
        runners.append(PeerProcess(p, shape, malloc=args.peer_malloc))
    row = dict(
        case=name,
        shape=list(shape),
        params=jax_runners[0].num_params,
        dtype=args.dtype,
        remat=args.remat,
        attention=args.attention,
        device=str(jax.devices()[0]),
    )
    for mode in ("train", "infer"):
        if mode == "infer" and args.train_only:
            continue
        times = measure(runners, mode, args.repeats, args.steps, args.warmup, lead_in=args.lead_in)
        row[mode] = {}
        for r in jax_runners:
            sec = statistics.median(times[r.name])
            m = row[mode][r.name] = dict(
                step_s=sec,
                min_step_s=min(times[r.name]),
                repeats_s=times[r.name],
                clips_per_s=shape[0] / sec,
                model_flops=r.flops[mode],
                tflops_per_s=r.flops[mode] / sec / 1e12,
                fraction_of_matmul_peak=r.flops[mode] / sec / peak,
            )
            if args.peak_flops:
                m["mfu"] = r.flops[mode] / sec / args.peak_flops
            if args.peer:
                peer = times[TorchRunner.name]
                m.update(
                    peer_step_s=statistics.median(peer),
                    peer_min_step_s=min(peer),
                    peer_repeats_s=peer,
                    speedup_vs_peer=statistics.median(peer) / sec,
                )
        if args.profile:
            for r in jax_runners:
                row[mode][r.name]["profile"] = profile_steps(r, mode, args.profile)
    row["peak_memory_bytes"] = peak_memory_bytes()
    if args.peer:
        runners[-1].close()
        row["peer"] = runners[-1].info  # its attention implementation and glibc tunables
    return row


def print_table(rows, peak, datasheet_peak=None):
    print(f"\nmatmul peak on {jax.devices()[0]}: {peak / 1e9:.1f} GFLOP/s measured", end="")
    print(f", {datasheet_peak / 1e12:.1f} TFLOP/s datasheet (MFU)" if datasheet_peak else "")
    head = f"{'case':<14}{'mode':<7}{'runner':<28}{'step ms':>9}{'min ms':>9}{'clips/s':>9}"
    head += f"{'GFLOP/s':>9}{'% peak':>7}{'MFU':>6}{'peer ms':>9}{'speedup':>9}"
    print(head)
    for r in rows:
        for mode in ("train", "infer"):
            for runner, m in r.get(mode, {}).items():
                line = (
                    f"{r['case']:<14}{mode:<7}{runner:<28}{m['step_s'] * 1e3:>9.1f}"
                    f"{m['min_step_s'] * 1e3:>9.1f}{m['clips_per_s']:>9.2f}"
                    f"{m['tflops_per_s'] * 1e3:>9.1f}{100 * m['fraction_of_matmul_peak']:>6.0f}%"
                    + (f"{100 * m['mfu']:>5.0f}%" if "mfu" in m else f"{'-':>6}")
                )
                if "peer_step_s" in m:
                    line += f"{m['peer_step_s'] * 1e3:>9.1f}{m['speedup_vs_peer']:>8.2f}x"
                print(line)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="", help="comma-separated presets: a, b, c")
    ap.add_argument("--variant", default="spacetime")
    ap.add_argument("--size", default="B", choices=sorted(SIZES))
    ap.add_argument("--layers", type=int, default=0, help="override the size's number of layers")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--classes", type=int, default=400)
    ap.add_argument("--classifier", default="token")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--remat", action="store_true")
    ap.add_argument(
        "--attention",
        default="einsum",
        help="einsum, fused, or both as einsum,fused (alternating runners in one run)",
    )
    ap.add_argument(
        "--last-block",
        default="cls",
        help="cls: the last block computes the class token alone (model.last_block_cls_only, "
        "the default); all: every token; cls,all: both side by side",
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=0.0,
        help="the device's matmul peak for MFU (default: DATASHEET_PEAK_TFLOPS by device kind)",
    )
    ap.add_argument("--peer", action="store_true", help="also run transformers' ViViT (Model 1)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (one compiles)")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument(
        "--devices",
        default="1",
        help="comma-separated device counts to run data parallel, e.g. 1,2 (CPU: host devices)",
    )
    ap.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "plain", "cpu", "both"],
        help="vivit_jax on plain JAX, with the CPU backend (the `cpu` extra: compiled attention "
        "kernel, XLA:CPU options), or both (A/B in one run); auto: what the command lines pick",
    )
    ap.add_argument(
        "--malloc",
        default="mimalloc",
        choices=list(cpu_tuning.MALLOC_CHOICES),
        help="vivit_jax's process restarts with this malloc, as vivit_jax.main does when "
        "VIVIT_JAX_MALLOC asks (cpu_tuning.restart_with_fast_malloc): mimalloc keeping freed "
        "memory (else glibc on huge pages), huge-pages = glibc on transparent huge pages, "
        "default = no restart",
    )
    ap.add_argument(
        "--peer-malloc",
        default="default",
        choices=["default", "mimalloc"],
        help="the peer's process: glibc's malloc as torch users run it (default), or "
        "vivit_jax's mimalloc, to see what the allocator alone is worth to the peer",
    )
    ap.add_argument(
        "--keep-freed-memory",
        default="on",
        choices=["on", "off"],
        help="glibc's mallopt settings in vivit_jax's process, as vivit_jax.main makes them "
        "(cpu_tuning.keep_freed_memory; no effect under mimalloc)",
    )
    ap.add_argument("--lead-in", type=int, default=1, help="untimed steps before each timed block")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="after timing, trace STEPS steps of each runner and print (and keep in the JSON) "
        "where its kernel time goes: matmul, attention, copies, other fusions "
        "(experiments/profile_summary.py)",
    )
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    os.environ[cpu_tuning.MALLOC_ENV] = args.malloc
    cpu_tuning.restart_with_fast_malloc()  # before JAX starts; the restart parses these flags again
    args.devices = [int(n) for n in args.devices.split(",")]
    args.attention = args.attention.split(",")
    args.last_block = args.last_block.split(",")
    if not set(args.last_block) <= {"cls", "all"}:
        ap.error(f"--last-block={','.join(args.last_block)!r}: expected cls, all or cls,all")
    for a in args.attention:
        if a not in ATTENTION_IMPLEMENTATIONS:
            ap.error(f"--attention={a!r}: expected one of {ATTENTION_IMPLEMENTATIONS}")
    if max(args.devices) > 1 and "xla_force_host_platform_device_count" not in os.environ.get(
        "XLA_FLAGS", ""
    ):
        # Host (CPU) devices must be requested before JAX starts its backend; GPU/TPU ignore it.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={max(args.devices)}"
        ).strip()

    args.malloc_in_use = cpu_tuning.malloc_in_use()
    print(f"--malloc={args.malloc}: {args.malloc_in_use}", flush=True)
    # As `vivit_jax.main` does (glibc's settings: nothing to do under mimalloc).
    args.keep_freed_memory = args.keep_freed_memory == "on" and cpu_tuning.keep_freed_memory()
    print(f"keep_freed_memory: {args.keep_freed_memory}", flush=True)
    peaks = matmul_peak_flops(jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    args.peak_flops = args.peak_tflops * 1e12 or datasheet_peak_flops(args.dtype)
    peak = max(peaks.values())
    for where, value in peaks.items():
        print(f"matmul peak ({where} options): {value / 1e9:.1f} GFLOP/s", flush=True)
    cases = []
    if args.preset:
        cases = [(name, PRESETS[name]) for name in args.preset.split(",")]
    else:
        s = SIZES[args.size]
        cases = [
            (
                f"{args.variant[:10]}-{args.size}",
                dict(
                    variant=args.variant,
                    frames=args.frames,
                    resolution=args.resolution,
                    hidden=s["hidden_size"],
                    layers=args.layers or s["num_layers"],
                    heads=s["num_heads"],
                    mlp=s["mlp_dim"],
                    classes=args.classes,
                    batch=args.batch,
                    classifier=args.classifier,
                ),
            )
        ]
    rows = []
    for name, p in cases:
        rows.append(run_case(name, p, args, peak))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, peak, args.peak_flops)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    matmul_peak_flops=peak,
                    matmul_peaks=peaks,
                    datasheet_peak_flops=args.peak_flops,
                    device_kind=jax.devices()[0].device_kind,
                    xla_flags=os.environ.get("XLA_FLAGS", ""),
                    glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""),
                    malloc=args.malloc,
                    malloc_in_use=args.malloc_in_use,
                    peer_malloc=args.peer_malloc,
                    keep_freed_memory=args.keep_freed_memory,
                    rows=rows,
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
