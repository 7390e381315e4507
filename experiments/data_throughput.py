r"""Decode + augment throughput of the input pipeline, in clips/s per CPU core.

Builds a Kinetics-shaped dataset from synthetic but real encoded videos (h264 .mp4, 320×240,
25 fps, 10 s, through the `kinetics400/short256` builder: JPEG frames with short side 256, as
the original), then times the train pipeline (32 frames at stride 2, resize 256, crop 224²,
with the configured augmentations) and the eval pipeline (central 32×224² clip). The process
is pinned to `--cores` cores (os.sched_setaffinity), so "per core" means what it says.

  python experiments/data_throughput.py                     # 1 core, then all cores
  python experiments/data_throughput.py --cores=1 --clips=64

Prints figures; asserts nothing about time.
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


def _config(data_dir: str, batch_size: int, aug: dict):
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
    args = parser.parse_args()

    import vivit_jax.data as data
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
    settings = {
        "train, crop+flip": {},
        "train, +scale jitter": {"do_jitter_scale": True},
        "train, +colour jitter": {"do_color_augment": True},
        "train, +scale jitter +colour": {"do_jitter_scale": True, "do_color_augment": True},
        "train, +scale jitter +RandAugment(2,15)": {
            "do_jitter_scale": True,
            "do_rand_augment": True,
        },
    }
    print(f"\n32×224² clips/s (batch {args.batch_size}, {args.clips} clips per figure)")
    print(f"{'setting':42s} {'cores':>5s} {'clips/s':>8s} {'per core':>9s}")
    for cores in core_counts:
        os.sched_setaffinity(0, available[:cores])
        for name, aug in settings.items():
            config = _config(data_dir, args.batch_size, aug)
            rate = _time(lambda c=config: data.get_dataset(c).train_iter, args.clips)
            print(f"{name:42s} {cores:5d} {rate:8.1f} {rate / cores:9.1f}")
        config = _config(data_dir, args.batch_size, {})
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


if __name__ == "__main__":
    main()
