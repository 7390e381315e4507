"""Builders: Kinetics and SSv2 from dirty local copies, the built-in moving_shapes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_jax.data import build as build_lib
from vivit_jax.data.builders import moving_shapes
from vivit_jax.data.sources import TfdsSource


@pytest.fixture(scope="module")
def no_ffmpeg_binary():
    """TFDS must never shell out to ffmpeg: we hand it encoded frames."""
    from tensorflow_datasets.core.features import video_feature

    original = video_feature.utils.ffmpeg_run

    def fail(*args, **kwargs):
        raise AssertionError("the ffmpeg binary was called")

    video_feature.utils.ffmpeg_run = fail
    yield
    video_feature.utils.ffmpeg_run = original


@pytest.fixture(scope="module")
def kinetics(kinetics_manual, tfds_dir, no_ffmpeg_binary):
    manual, expect = kinetics_manual
    builder = build_lib.build(
        "kinetics400/short32", data_dir=tfds_dir, manual_dir=manual, num_workers=2
    )
    return builder, expect


def _records(builder, split):
    src = TfdsSource(builder, split)
    return {src.get(i)[2]: src.get(i) for i in range(src.num_examples)}


def test_kinetics_counts_labels_and_report(kinetics):
    builder, expect = kinetics
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == expect["counts"]
    assert builder.info.features["label"].names == sorted(
        ["abseiling", "cutting, chopping", "playing guitar"]
    )
    records = _records(builder, "train")
    assert set(records) == set(expect["train_ok"])
    for key, (frames, labels, _) in records.items():
        assert labels == [expect["train_ok"][key]], key
        assert len(frames) == expect["frames"][key], key
    report = builder.build_reports["train"]
    assert report.missing == expect["missing"]
    assert sorted(report.undecodable) == sorted(expect["undecodable"])
    assert report.written == expect["counts"]["train"]
    saved = json.load(open(os.path.join(builder.data_dir, "build_report.json")))
    assert saved["train"]["missing"] == expect["missing"]
    # Test rows have no labels in this CSV.
    assert all(rec[1] == [-1] for rec in _records(builder, "test").values())


def test_kinetics_short_side_fps_and_portrait(kinetics):
    builder, expect = kinetics
    ds = tfds.as_numpy(builder.as_dataset(split="train"))
    seen = 0
    for ex in ds:
        key = ex["video_id"].decode()
        h, w = ex["video"].shape[1:3]
        assert min(h, w) == 32
        if key in expect["size"]:
            assert (h, w) == expect["size"][key]
        if key in expect["fps"]:
            assert ex["fps"] == pytest.approx(expect["fps"][key])
        seen += 1
    assert seen == expect["counts"]["train"]


def test_kinetics_rebuild_is_a_no_op(kinetics, kinetics_manual, tfds_dir, capsys):
    builder = build_lib.build(
        "kinetics400/short32", data_dir=tfds_dir, manual_dir=kinetics_manual[0]
    )
    assert "already built" in capsys.readouterr().out
    assert builder.info.splits["train"].num_examples == kinetics[1]["counts"]["train"]


def test_kinetics_missing_annotations_say_what_to_do(tmp_path, tfds_dir):
    with pytest.raises(FileNotFoundError, match="train.csv"):
        build_lib.build("kinetics600/short32", data_dir=str(tmp_path), manual_dir=str(tmp_path))


def test_ssv2(ssv2_manual, tfds_dir, no_ffmpeg_binary):
    builder = build_lib.build(
        "something_something_v2/short32", data_dir=tfds_dir, manual_dir=ssv2_manual
    )
    names = builder.info.features["label"].names
    assert names == [
        "Pushing something from left to right",
        "Pushing something from right to left",
        "Putting something on a surface",
    ]
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == {
        "train": 6,
        "validation": 3,
        "test": 2,
    }
    report = builder.build_reports["train"]
    assert report.missing == ["9001.webm"] and list(report.undecodable) == ["9002.webm"]
    train = _records(builder, "train")
    assert sorted(lab[0] for _, lab, _ in train.values()) == [0, 0, 1, 1, 2, 2]
    assert all(len(frames) == 6 for frames, _, _ in train.values())
    assert all(lab == [-1] for _, lab, _ in _records(builder, "test").values())
    frame = tf.io.decode_jpeg(train["1"][0][0]).numpy()
    assert frame.shape == (32, 43, 3)


def test_moving_shapes_class_is_only_in_the_motion():
    """Same random state, different class: identical first frame; the motion differs."""
    videos = [
        moving_shapes.render(label, np.random.default_rng(5), 8, 32, 6.0)
        for label in range(len(moving_shapes.CLASS_NAMES))
    ]
    for v in videos[1:]:
        np.testing.assert_array_equal(v[0], videos[0][0])
    assert len({v[3].tobytes() for v in videos}) == len(videos)


def _displacement(a, b):
    """Integer shift (dy, dx) that best maps frame a onto frame b, on the torus."""
    a = a.astype(np.float32).mean(-1)
    b = b.astype(np.float32).mean(-1)
    a, b = a - a.mean(), b - b.mean()
    corr = np.fft.ifft2(np.fft.fft2(b) * np.conj(np.fft.fft2(a))).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    size = a.shape[0]
    return (dy + size // 2) % size - size // 2, (dx + size // 2) % size - size // 2


def test_moving_shapes_motion_matches_label(shapes_dir):
    builder = tfds.builder("moving_shapes/tiny", data_dir=shapes_dir)
    assert builder.info.features["label"].names == moving_shapes.CLASS_NAMES
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
        direction, speed = moving_shapes.CLASS_NAMES[ex["label"]].split("_")
        dy, dx = moving_shapes.DIRECTIONS[direction]
        step = moving_shapes.SPEEDS[speed]
        assert ex["video"].shape == (8, 16, 16, 3)
        assert _displacement(ex["video"][0], ex["video"][2]) == (2 * step * dy, 2 * step * dx)


def test_moving_shapes_is_deterministic(tmp_path, shapes_dir):
    other = build_lib.build("moving_shapes/tiny", data_dir=str(tmp_path))
    first = tfds.builder("moving_shapes/tiny", data_dir=shapes_dir)
    a = {e["video_id"]: e["video"].tobytes() for e in tfds.as_numpy(first.as_dataset(split="test"))}
    b = {e["video_id"]: e["video"].tobytes() for e in tfds.as_numpy(other.as_dataset(split="test"))}
    assert a == b


def test_cli(shapes_dir, capsys):
    build_lib.main(["--dataset=moving_shapes", "--config=tiny", f"--data_dir={shapes_dir}"])
    assert "moving_shapes/tiny/1.0.0 is already built" in capsys.readouterr().out
