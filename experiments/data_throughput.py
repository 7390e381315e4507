r"""Input pipeline throughput: host clips/s per core by recipe, and the device augmentation's cost.

Builds a Kinetics-shaped dataset from synthetic but real encoded videos (h264 .mp4, 320×240,
25 fps, 10 s, through the `kinetics400/short256` builder: JPEG frames with short side 256, as
the original), then times the host side of the train pipeline (32 frames at stride 2, short side
256, crop 224², as uint8) for each recipe, and the eval pipeline (central 32×224² clip). The
process is pinned to `--cores` cores (os.sched_setaffinity), so "per core" means what it says.
The recipes are the configs' own augmentation settings:
  crop + flip; + scale jitter, which is the Kinetics recipe (configs/kinetics400/*.py); the
  SSv2 / EPIC-Kitchens recipe (scale jitter + RandAugment(2, 15/20), no flips). Colour jitter
  and RandAugment run on the device, so on the host the recipes differ by scale jitter and
  flips only.
Then the device's share: the jitted augmentation (normalisation, colour jitter, RandAugment) of
one `--device_batch` batch of 32×224² uint8 clips on JAX's default device, ms per batch.

  python experiments/data_throughput.py                     # 1 core, then all cores
  python experiments/data_throughput.py --cores=1 --clips=64 --device_batch=8

Prints figures; asserts nothing about time. Needs the `build` extra (the dataset build).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time

import numpy as np


def _make_videos(manual_dir: str, num_videos: int, seconds: int) -> None:
    from vivit_jax.data.video_io import write_video

    os.makedirs(os.path.join(manual_dir, "annotations"))
    rows = []
    for split, folder in (("train", "train"), ("validate", "val")):
        os.makedirs(os.path.join(manual_dir, folder))
        for i in range(num_videos if split == "train" else 2):
            label = f"class{i % 4}"
            ytid = f"{split[:3]}{i:08d}"
            t = np.arange(seconds * 25)[:, None, None, None]
            yy, xx = (a[None, :, :, None] for a in np.mgrid[0:240, 0:320])
            frames = ((xx + 3 * t + 40 * i) % 256 + (yy // 8) % 2 * 30).astype(np.uint8)
            frames = np.concatenate([frames, (yy + t) % 256, np.full_like(frames, 90)], -1)
            write_video(
                os.path.join(manual_dir, folder, f"{ytid}_000000_{seconds:06d}.mp4"),
                frames.astype(np.uint8),
                fps=25,
            )
            rows.append((split, label, ytid))
    for split in ("train", "validate"):
        with open(os.path.join(manual_dir, "annotations", f"{split}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
            for s, label, ytid in rows:
                if s == split:
                    w.writerow([label, ytid, 0, seconds, s])


def _config(data_dir: str, batch_size: int, aug: dict, flip: bool = True, threads: int = -1):
    import ml_collections

    config = ml_collections.ConfigDict()
    config.dataset_name = "kinetics400/short256"
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
    config.rng_seed = 0
    config.dataset_configs = dict(
        num_frames=32,
        stride=2,
        min_resize=256,
        crop_size=224,
        data_dir=data_dir,
        augmentation_params=aug,
        random_flip=flip,
        num_parallel_calls=threads,
    )
    return config


def _time(make_iter, clips: int) -> float:
    """Real (unpadded) clips per second over at least `clips` clips, after a warm-up batch."""
    it = make_iter()
    next(it)  # warm-up: tracing, first reads
    done, start = 0, time.perf_counter()
    while done < clips:
        try:
            batch = next(it)
        except StopIteration:
            it = make_iter()
            continue
        done += int(batch["batch_mask"].sum())
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="Where to build (default: a temp dir).")
    parser.add_argument("--num_videos", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clips", type=int, default=48, help="Clips timed per setting.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--cores", type=int, nargs="*", default=None, help="Core counts to try.")
    parser.add_argument("--device_batch", type=int, default=8, help="Clips per device batch.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed device batches.")
    args = parser.parse_args()

    from vivit_jax import data
    from vivit_jax.data import build as build_lib

    workdir = args.workdir or tempfile.mkdtemp(prefix="vivit_throughput_")
    manual, data_dir = os.path.join(workdir, "manual"), os.path.join(workdir, "tfds")
    if not os.path.exists(manual):
        start = time.perf_counter()
        _make_videos(manual, args.num_videos, args.seconds)
        print(f"wrote {args.num_videos} + 2 videos in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    build_lib.build("kinetics400/short256", data_dir=data_dir, manual_dir=manual)
    print(f"build (or reuse): {time.perf_counter() - start:.1f} s")

    available = sorted(os.sched_getaffinity(0))
    core_counts = args.cores or sorted({1, len(available)})
    scale = {"do_jitter_scale": True, "scale_min_factor": 0.9, "scale_max_factor": 1.33}
    randaugment = {**scale, "do_rand_augment": True, "rand_augment_num_layers": 2}
    recipes = {  # name: (augmentation_params, random flip)
        "train, crop + flip": ({}, True),
        "train, + scale jitter (the Kinetics recipe)": (scale, True),
        "train, SSv2/EPIC (scale jitter, RandAugment)": (randaugment, False),
    }
    print(f"\n32×224² clips/s (batch {args.batch_size}, {args.clips} clips per figure)")
    print(f"{'setting':42s} {'cores':>5s} {'clips/s':>8s} {'per core':>9s}")
    for cores in core_counts:
        os.sched_setaffinity(0, available[:cores])
        for name, (aug, flip) in recipes.items():
            config = _config(data_dir, args.batch_size, aug, flip, cores)
            rate = _time(lambda c=config: data.get_dataset(c).train_iter, args.clips)
            print(f"{name:42s} {cores:5d} {rate:8.1f} {rate / cores:9.1f}")
        config = _config(data_dir, args.batch_size, {}, True, cores)
        config.dataset_configs.eval_split = "train"  # more videos than the 2 validation ones
        ds = data.get_dataset(config)
        for _ in ds.valid_iter():  # warm-up pass
            pass
        done, start = 0, time.perf_counter()
        for batch in ds.valid_iter():
            done += int(batch["batch_mask"].sum())
        rate = done / (time.perf_counter() - start)
        print(f"{'eval, central crop':42s} {cores:5d} {rate:8.1f} {rate / cores:9.1f}")
    os.sched_setaffinity(0, available)
    _device_augmentation(args.device_batch, args.repeats)


def _device_augmentation(batch: int, repeats: int) -> None:
    """ms per batch of the jitted device augmentation, by recipe (median of `repeats`)."""
    import jax

    from vivit_jax.data import augment

    clips = np.random.default_rng(0).integers(0, 256, (batch, 32, 224, 224, 3), dtype=np.uint8)
    clips = jax.device_put(clips)
    key = jax.random.key(0)
    recipes = {
        "normalise only": augment.Augment(),
        "colour jitter (Kinetics-600 recipe)": augment.Augment(color=True),
        "RandAugment(2, 15)": augment.Augment(rand_augment=True, num_layers=2, magnitude=15),
    }
    device = jax.devices()[0]
    print(f"\ndevice augmentation of {batch}×32×224² uint8 clips on {device.device_kind}, ms")
    for name, recipe in recipes.items():
        fn = jax.jit(lambda x, k, r=recipe: augment.augment_batch(x, k, r))
        fn(clips, key).block_until_ready()
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            fn(clips, jax.random.fold_in(key, i)).block_until_ready()
            times.append(time.perf_counter() - start)
        print(f"{name:42s} {1e3 * float(np.median(times)):9.1f}")


if __name__ == "__main__":
    main()
