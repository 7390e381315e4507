"""Fixtures for the data tests: small real encoded videos in Kinetics / SSv2 layouts, with the
faults real downloads have, and tiny built datasets. Everything is session-scoped and built once.
"""

from __future__ import annotations

import csv
import json
import os

import ml_collections
import numpy as np
import pytest

from vivit_jax.data import build as build_lib
from vivit_jax.data import builders
from vivit_jax.data.video_io import write_video

builders.register()  # The tests build datasets with the builders.

K_CLASSES = ["abseiling", "cutting, chopping", "playing guitar"]  # one needs CSV quoting


def clip_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A bright square moving over a gradient: real content for the codecs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([yy * 255 // height, xx * 255 // width, np.full_like(yy, 60)], -1)
    frames = np.repeat(base[None].astype(np.uint8), num_frames, 0)
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    for t in range(num_frames):
        y, x = (y0 + t) % (height - 8), (x0 + 2 * t) % (width - 8)
        frames[t, y : y + 8, x : x + 8] = 250
    return frames


def _clip_name(ytid: str, start: int) -> str:
    return f"{ytid}_{start:06d}_{start + 10:06d}"


@pytest.fixture(scope="session")
def kinetics_manual(tmp_path_factory):
    """A CVDF-mirror-shaped Kinetics copy. Returns (manual_dir, expectations dict)."""
    root = tmp_path_factory.mktemp("k400")
    ann = root / "annotations"
    ann.mkdir()
    expect = {"train_ok": {}, "frames": {}, "fps": {}, "size": {}}
    train_rows = []
    # Healthy clips: 2 per class, class folders (arrange_by_classes.py layout), varied fps.
    for c, label in enumerate(K_CLASSES):
        for j in range(2):
            ytid = f"vid{c}{j}abcde"
            name = _clip_name(ytid, 10 * j)
            folder = root / "train" / label
            folder.mkdir(parents=True, exist_ok=True)
            fps = (25, 30)[j]
            write_video(str(folder / f"{name}.mp4"), clip_frames(12, 48, 64, c * 10 + j), fps=fps)
            train_rows.append((label, ytid, 10 * j))
            expect["train_ok"][name] = c
            expect["frames"][name] = 12
            expect["fps"][name] = fps
            expect["size"][name] = (32, 43)
    # Faults, all in class 0's folder.
    folder = root / "train" / K_CLASSES[0]
    short = _clip_name("shortclip01", 0)  # fewer frames than any clip asks for
    write_video(str(folder / f"{short}.mp4"), clip_frames(3, 48, 64, 99), fps=12)
    train_rows.append((K_CLASSES[0], "shortclip01", 0))
    expect["train_ok"][short] = 0
    expect["frames"][short] = 3
    expect["fps"][short] = 12
    portrait = _clip_name("portrait001", 0)
    write_video(str(folder / f"{portrait}.mp4"), clip_frames(6, 64, 48, 98), fps=30)
    train_rows.append((K_CLASSES[1], "portrait001", 0))
    expect["train_ok"][portrait] = 1
    expect["frames"][portrait] = 6
    expect["size"][portrait] = (43, 32)
    (folder / f"{_clip_name('emptyfile01', 0)}.mp4").write_bytes(b"")
    train_rows.append((K_CLASSES[0], "emptyfile01", 0))
    good = (folder / f"{_clip_name('vid00abcde', 0)}.mp4").read_bytes()
    (folder / f"{_clip_name('truncated01', 0)}.mp4").write_bytes(good[: len(good) // 2])
    train_rows.append((K_CLASSES[2], "truncated01", 0))
    train_rows.append((K_CLASSES[2], "missingvid1", 0))  # row without a file
    train_rows.append(train_rows[0])  # duplicated row
    expect["missing"] = [f"{_clip_name('missingvid1', 0)}.mp4"]
    expect["undecodable"] = [
        f"{_clip_name('emptyfile01', 0)}.mp4",
        f"{_clip_name('truncated01', 0)}.mp4",
    ]
    with open(ann / "train.csv", "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        for label, ytid, start in train_rows:
            w.writerow([label, ytid, start, start + 10, "train", 0])
    # Validation: flat folder 'val/', CSV named 'val.csv' (CVDF), no is_cc column.
    (root / "val").mkdir()
    val_rows = []
    for c, label in enumerate(K_CLASSES):
        ytid = f"val{c}xxxxxx"
        write_video(
            str(root / "val" / f"{_clip_name(ytid, 0)}.mp4"), clip_frames(8, 48, 64, 50 + c)
        )
        val_rows.append((label, ytid, 0))
    with open(ann / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for label, ytid, start in val_rows:
            w.writerow([label, ytid, start, start + 10, "validate"])
    # Test: no label column (as some releases).
    (root / "test").mkdir()
    with open(ann / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["youtube_id", "time_start", "time_end", "split"])
        for k in range(2):
            ytid = f"tst{k}yyyyyy"
            write_video(
                str(root / "test" / f"{_clip_name(ytid, 0)}.mp4"), clip_frames(8, 48, 64, 70 + k)
            )
            w.writerow([ytid, 0, 10, "test"])
    expect["counts"] = {"train": len(expect["train_ok"]), "validation": 3, "test": 2}
    return str(root), expect


SSV2_TEMPLATES = [
    "Pushing [something] from left to right",
    "Pushing [something] from right to left",
    "Putting [something] on a surface",
]


@pytest.fixture(scope="session")
def ssv2_manual(tmp_path_factory):
    """The SSv2 download as unpacked: labels/*.json and 20bn-something-something-v2/*.webm."""
    root = tmp_path_factory.mktemp("ssv2")
    labels = root / "labels"
    labels.mkdir()
    videos = root / "20bn-something-something-v2"
    videos.mkdir()
    label_map = {t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(SSV2_TEMPLATES)}
    (labels / "something-something-v2-labels.json").write_text(json.dumps(label_map))
    entries = {"train": [], "validation": [], "test": []}
    vid = 0
    for split, per_class in (("train", 2), ("validation", 1)):
        for template in SSV2_TEMPLATES:
            for _ in range(per_class):
                vid += 1
                write_video(str(videos / f"{vid}.webm"), clip_frames(6, 48, 64, vid), fps=12)
                entries[split].append(
                    {
                        "id": str(vid),
                        "label": template.replace("[something]", "a cup"),
                        "template": template,
                        "placeholders": ["a cup"],
                    }
                )
    entries["train"].append(
        {"id": "9001", "template": SSV2_TEMPLATES[0], "label": "x", "placeholders": []}
    )
    (videos / "9002.webm").write_bytes(os.urandom(2000))  # corrupt
    entries["train"].append(
        {"id": "9002", "template": SSV2_TEMPLATES[1], "label": "x", "placeholders": []}
    )
    for _ in range(2):
        vid += 1
        write_video(str(videos / f"{vid}.webm"), clip_frames(6, 48, 64, vid), fps=12)
        entries["test"].append({"id": str(vid)})
    for split, rows in entries.items():
        (labels / f"something-something-v2-{split}.json").write_text(json.dumps(rows))
    return str(root)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def shapes_dir(tfds_dir):
    """moving_shapes/tiny, built once."""
    build_lib.build("moving_shapes/tiny", data_dir=tfds_dir)
    return tfds_dir


def _make_config(data_dir, name="moving_shapes/tiny", batch_size=8, eval_batch_size=8, **overrides):
    config = ml_collections.ConfigDict()
    config.dataset_name = name
    config.batch_size = batch_size
    config.eval_batch_size = eval_batch_size
    config.rng_seed = 7
    dc = dict(num_frames=8, stride=1, min_resize=16, crop_size=16, data_dir=data_dir)
    dc.update(overrides)
    config.dataset_configs = dc
    return config


@pytest.fixture(scope="session")
def make_config():
    """make_config(data_dir, name=..., batch_size=8, eval_batch_size=8, **dataset_configs)."""
    return _make_config
