r"""Training on real records against synthetic batches: is the step input-bound, and at what
host worker count?

Writes Scenic-style DMVR shards (`tf.train.SequenceExample`, one JPEG per frame, short side 256
like the builders' `short256`; no TensorFlow needed) of `--videos` synthetic clips to `--data`,
then for each model: compiles the training step (`vivit_jax.train.compile_steps`, bf16 by
default) and times it, alternating, on
  * synthetic: one uint8 batch already on the device, reused every step (the device alone);
  * real: batches from the TF-free pipeline (`vivit_jax.data.get_dataset` over the shards,
    decode + crop + flip on the host, colour jitter / RandAugment on the device), with
    `--workers` worker processes (`dataset_configs.num_workers`) of `--threads` threads each;
and the host pipeline alone (clips/s). A real step much slower than a synthetic one, with the
host pipeline's clips/s below the step's, means the step is input-bound.

  python experiments/real_data.py --data=/tmp/vivit_records --models=spacetime,factorized_encoder \
      --batch=32 --workers=0,4,8 --json=out.json               # on a GPU
  python experiments/real_data.py --size=Ti --layers=1 --frames=8 --resolution=32 --batch=4 \
      --videos=8 --video_frames=16 --dtype=float32 --workers=0,1   # a dry run on a CPU

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from vivit_jax import backends, config_lib, experiment, sharding, train  # noqa: E402
from vivit_jax.data import dmvr  # noqa: E402
from vivit_jax.data.video_io import encode_jpeg  # noqa: E402
from vivit_jax.models import SIZES  # noqa: E402


def write_records(directory: str, videos: int, frames: int, short: int, classes: int) -> dict:
    """`videos` clips of `frames` JPEG frames (`short` × 4/3·`short`) as 4 DMVR shards per split;
    returns `dataset_configs.tables`. Reuses shards already there."""
    os.makedirs(directory, exist_ok=True)
    tables = {"train": "train.tfrecord@4", "validation": "validation.tfrecord@4"}
    if all(os.path.exists(os.path.join(directory, f"{s}.tfrecord-00003-of-00004")) for s in tables):
        return tables
    h, w = short, short * 4 // 3
    yy, xx = np.mgrid[0:h, 0:w] / w
    for split, count in (("train", videos), ("validation", max(4, videos // 8))):

        def examples(count=count, split=split):
            for i in range(count):
                rng = np.random.default_rng(i)
                phase = rng.uniform(0, 6, 3)
                clip = []
                for t in range(frames):
                    shift = 0.02 * t * (1 + i % 3)
                    planes = [np.sin(6 * (xx + shift) + p) * np.cos(4 * yy - p) for p in phase]
                    frame = 127 + 100 * np.stack(planes, -1) + rng.normal(0, 6, (h, w, 3))
                    clip.append(encode_jpeg(np.clip(frame, 0, 255).astype(np.uint8)))
                yield {"frames": clip, "label": i % classes, "name": f"{split}_{i}"}

        dmvr.write_records(os.path.join(directory, f"{split}.tfrecord"), examples(), num_shards=4)
    return tables


def make_config(args, variant: str, tables: dict, workers: int):
    c = config_lib.default_config()
    c.dataset_name = "video_tfrecord_dataset"
    ds = c.dataset_configs
    ds.base_dir, ds.tables, ds.num_classes = args.data, tables, args.classes
    ds.num_frames, ds.stride, ds.crop_size = args.frames, 2, args.resolution
    ds.min_resize = max(args.resolution, 256) if args.resolution >= 224 else args.resolution
    ds.num_workers, ds.num_parallel_calls, ds.prefetch = workers, args.threads, 4
    aug = ds.augmentation_params
    aug.do_jitter_scale = True
    aug.do_rand_augment = args.randaugment
    size = SIZES[args.size]
    m = c.model
    m.attention_config.type = variant
    m.hidden_size, m.num_heads, m.mlp_dim = size["hidden_size"], size["num_heads"], size["mlp_dim"]
    layers = args.layers or size["num_layers"]
    m.num_layers = layers
    m.spatial_transformer.update(num_layers=layers, num_heads=m.num_heads, mlp_dim=m.mlp_dim)
    m.temporal_transformer.update(num_layers=4, num_heads=m.num_heads, mlp_dim=m.mlp_dim)
    m.patches.size = (16, 16, 2) if args.resolution >= 64 else (8, 8, 2)
    m.dropout_rate = m.attention_dropout_rate = 0.0
    m.attention_implementation = args.attention
    c.model_dtype_str = args.dtype
    c.batch_size, c.num_training_steps = args.batch, 1000
    c.optimizer = "adamw"
    return config_lib.complete_config(c)


def time_steps(train_fn, state, batches, rng, steps: int):
    """Median seconds per step over `steps` steps (after one untimed), and the new state."""
    state, _ = train_fn(state, next(batches), rng)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(batches)
        state, metrics = train_fn(state, batch, rng)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), state


def run_model(args, variant: str, tables: dict) -> dict:
    row = {"variant": variant, "batch": args.batch, "frames": args.frames, "real": {}}
    mesh = sharding.create_mesh(1)
    backend = backends.for_platform(fused=args.attention == "fused")
    config = make_config(args, variant, tables, 0)
    dataset = experiment.default_dataset_fn(config, mesh=mesh, start_step=0)
    exp = experiment.build_experiment(config, mesh=mesh, dataset=dataset, backend=backend)
    train_fn, _ = train.compile_steps(exp)
    state = experiment.initial_state(exp)
    keys = train.TRAIN_KEYS
    first = {k: v for k, v in next(dataset.train_iter).items() if k in keys}

    def synthetic():
        while True:
            yield first

    def real(it):
        for batch in it:
            yield {k: v for k, v in batch.items() if k in keys}

    row["synthetic_step_s"], state = time_steps(
        train_fn, state, synthetic(), exp.train_rng, args.steps
    )
    for workers in args.workers:
        cfg = make_config(args, variant, tables, workers)
        it = experiment.default_dataset_fn(cfg, mesh=mesh, start_step=0).train_iter
        step, state = time_steps(train_fn, state, real(it), exp.train_rng, args.steps)
        pipe = experiment.default_dataset_fn(cfg, mesh=None, start_step=0).train_iter
        next(pipe)
        start = time.perf_counter()
        for _ in range(args.steps):
            next(pipe)
        clips = args.batch * args.steps / (time.perf_counter() - start)
        row["real"][workers] = {"step_s": step, "host_clips_per_s": clips}
        print(
            f"{variant:20s} workers {workers:2d}: real {1e3 * step:8.1f} ms/step, synthetic "
            f"{1e3 * row['synthetic_step_s']:8.1f} ms/step, host pipeline {clips:7.1f} clips/s, "
            f"step wants {args.batch / row['synthetic_step_s']:7.1f} clips/s",
            flush=True,
        )
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/tmp/vivit_records")
    ap.add_argument("--models", default="spacetime,factorized_encoder")
    ap.add_argument("--size", default="B", choices=sorted(SIZES))
    ap.add_argument("--layers", type=int, default=0, help="0: the size's own")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--short", type=int, default=256, help="short side of the stored frames")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--attention", default="fused", choices=["einsum", "fused"])
    ap.add_argument("--randaugment", action="store_true", help="the SSv2/EPIC recipe")
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--video_frames", type=int, default=80)
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--workers", default="0,4,8", help="comma-separated worker-process counts")
    ap.add_argument("--threads", type=int, default=-1, help="threads per process (-1: cores)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    start = time.perf_counter()
    tables = write_records(args.data, args.videos, args.video_frames, args.short, args.classes)
    print(f"records in {args.data}: {time.perf_counter() - start:.1f} s", flush=True)
    rows = [run_model(args, v, tables) for v in args.models.split(",")]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0]), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
