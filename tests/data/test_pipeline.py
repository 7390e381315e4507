"""get_dataset on moving_shapes/tiny (40 train / 20 validation / 12 test videos, 8×16×16)."""

import itertools
import os
import threading
import time

import jax
import numpy as np
import pytest

from vivit_jax.data import clips, get_dataset, host_ops, pipeline
from vivit_jax.data import config as data_config
from vivit_jax.data.sources import DatasetNotFoundError, PreparedDataset, TfdsSource


def _take(it, n):
    return list(itertools.islice(it, n))


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_train_batches(shapes_dir, make_config):
    ds = get_dataset(make_config(shapes_dir))
    meta = ds.meta_data
    assert meta["num_classes"] == 8 and len(meta["class_names"]) == 8
    assert (meta["num_train_examples"], meta["num_eval_examples"], meta["num_test_examples"]) == (
        40,
        20,
        12,
    )
    assert meta["input_shape"] == (8, 16, 16, 3) and meta["target_is_onehot"] is False
    batch = next(ds.train_iter)
    # uint8 to the device (normalised there, in the step).
    assert batch["inputs"].shape == (8, 8, 16, 16, 3) and batch["inputs"].dtype == np.uint8
    assert meta["input_dtype"] == np.uint8
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    np.testing.assert_array_equal(batch["batch_mask"], np.ones(8, np.float32))
    assert batch["inputs"].min() < 50 and batch["inputs"].max() > 200


def test_one_epoch_visits_every_example_once(shapes_dir, make_config):
    """5 steps × 8 = one epoch of 40: a permutation; the next epoch is a different one."""
    ds = get_dataset(make_config(shapes_dir))
    batches = _take(ds.train_iter, 10)
    labels = np.concatenate([b["label"] for b in batches[:5]])
    assert np.bincount(labels, minlength=8).tolist() == [5] * 8
    second = np.concatenate([b["label"] for b in batches[5:]])
    assert np.bincount(second, minlength=8).tolist() == [5] * 8
    assert not np.array_equal(labels, second)  # another permutation


def test_same_seed_same_batches_and_seed_matters(shapes_dir, make_config):
    a = _take(get_dataset(make_config(shapes_dir)).train_iter, 3)
    b = _take(get_dataset(make_config(shapes_dir)).train_iter, 3)
    for x, y in zip(a, b):
        _equal(x, y)
    other = make_config(shapes_dir)
    other.rng_seed = 8
    c = _take(get_dataset(other).train_iter, 1)[0]
    assert not np.array_equal(a[0]["inputs"], c["inputs"])


def test_exact_resume_without_decoding_skipped_examples(shapes_dir, make_config, monkeypatch):
    config = make_config(
        shapes_dir, augmentation_params=dict(do_jitter_scale=True, do_color_augment=True)
    )
    full = _take(get_dataset(config).train_iter, 9)
    positions = []
    original = clips.ClipMaker._clip

    def spy(self, frames, index, position):
        positions.append(position)
        return original(self, frames, index, position)

    monkeypatch.setattr(clips.ClipMaker, "_clip", spy)
    resumed = _take(get_dataset(config, start_step=6).train_iter, 3)
    for x, y in zip(full[6:], resumed):
        _equal(x, y)
    assert min(positions) == 6 * 8  # nothing before step 6 was read or decoded


@pytest.mark.parametrize("role", ["train", "eval"])
def test_two_processes_make_the_single_process_batch(shapes_dir, make_config, role):
    config = make_config(shapes_dir)

    def batches(**kw):
        ds = get_dataset(config, **kw)
        it = ds.train_iter if role == "train" else ds.valid_iter()
        return _take(it, 3)

    single = batches(process_index=0, process_count=1)
    p0 = batches(process_index=0, process_count=2)
    p1 = batches(process_index=1, process_count=2)
    for s, a, b in zip(single, p0, p1):
        assert a["inputs"].shape[0] == 4
        _equal(s, {k: np.concatenate([a[k], b[k]]) for k in s})


def test_eval_counts_every_video_once(shapes_dir, make_config):
    config = make_config(shapes_dir, eval_batch_size=6)
    ds = get_dataset(config)
    steps = list(ds.valid_iter())
    assert len(steps) == ds.meta_data["num_eval_steps"] == 4  # ceil(20 / 6)
    ids = np.concatenate([b["video_index"] for b in steps])
    mask = np.concatenate([b["batch_mask"] for b in steps])
    assert sorted(ids[mask == 1].tolist()) == list(range(20))
    assert (ids[mask == 0] == -1).all() and mask.sum() == 20
    pad = steps[-1]["inputs"][steps[-1]["batch_mask"] == 0]
    assert (pad == 0).all()
    # Each process gets the same number of steps, and together they cover every video once.
    per_process = [
        list(get_dataset(config, process_index=i, process_count=2).valid_iter()) for i in range(2)
    ]
    assert [len(p) for p in per_process] == [4, 4]
    ids = np.concatenate([b["video_index"] for p in per_process for b in p])
    assert sorted(ids[ids >= 0].tolist()) == list(range(20))
    # Labels are the stored ones (read back with TensorFlow: the reader's own parsing is TF-free).
    src = TfdsSource(PreparedDataset("moving_shapes/tiny", shapes_dir), "validation")
    for b in steps:
        for vid, label, m in zip(b["video_index"], b["label"], b["batch_mask"]):
            if m:
                assert src.get(int(vid))[1] == [label]


def test_test_views_are_the_specified_clips_and_crops(shapes_dir, make_config):
    """4 clips evenly spaced × 3 crops, checked against frames decoded by hand."""
    config = make_config(
        shapes_dir,
        num_frames=3,
        stride=2,
        min_resize=16,
        crop_size=12,
        num_test_clips=2,
        do_three_spatial_crops=True,
        test_batch_size=5,
    )
    ds = get_dataset(config)
    assert ds.meta_data["num_test_views"] == 6
    src = TfdsSource(PreparedDataset("moving_shapes/tiny", shapes_dir), "test")
    seen = []
    for batch in ds.test_iter():
        assert batch["inputs"].shape == (5, 6, 3, 12, 12, 3)
        for row in range(5):
            vid = int(batch["video_index"][row])
            if vid < 0:
                continue
            seen.append(vid)
            frames = src.get(vid)[0]
            video = np.stack([host_ops.decode_jpeg(f) for f in frames])  # 8 frames, 16×16
            # offsets linspace(0, 8 - 3*2, 2) = [0, 2]; a square frame is cropped as landscape:
            # y = ceil((16 - 12) / 2) = 2, x = 0 / 2 / 4.
            for crop, x in enumerate([0, 2, 4]):
                for clip, offset in enumerate([0, 2]):
                    want = video[offset : offset + 6 : 2, 2:14, x : x + 12].astype(np.int32)
                    got = batch["inputs"][row, crop * 2 + clip].astype(np.int32)
                    np.testing.assert_array_equal(got, want)
    assert sorted(seen) == list(range(12))


def test_one_hot_labels(shapes_dir, make_config):
    ds = get_dataset(make_config(shapes_dir, one_hot_labels=True))
    batch = next(ds.train_iter)
    assert ds.meta_data["target_is_onehot"] is True
    assert batch["label"].shape == (8, 8) and batch["label"].dtype == np.float32
    np.testing.assert_array_equal(batch["label"].sum(-1), np.ones(8))


def test_mesh_batches_are_global_arrays(shapes_dir, make_config):
    devices = np.array(jax.devices())
    if devices.size < 8:
        pytest.skip("needs 8 (simulated) devices")
    mesh = jax.sharding.Mesh(devices[:8].reshape(4, 2), ("data", "model"))
    config = make_config(shapes_dir)
    plain = next(get_dataset(config).train_iter)
    sharded = next(get_dataset(config, mesh=mesh).train_iter)
    for k, v in sharded.items():
        assert isinstance(v, jax.Array) and v.shape == plain[k].shape
        assert v.sharding.spec[0] == "data"
        np.testing.assert_array_equal(np.asarray(v), plain[k])
    evals = list(get_dataset(config, mesh=mesh).valid_iter())
    assert len(evals) == 3 and evals[0]["video_index"].sharding.spec[0] == "data"
    with pytest.raises(ValueError, match="config.batch_size=6"):
        get_dataset(make_config(shapes_dir, batch_size=6), mesh=mesh)


def test_missing_dataset_says_how_to_build_it(tmp_path, make_config):
    with pytest.raises(
        DatasetNotFoundError,
        match="python -m vivit_jax.data.build --dataset=kinetics400 --manual_dir=",
    ):
        get_dataset(make_config(str(tmp_path), name="kinetics400"))
    with pytest.raises(ValueError, match="not a known dataset"):
        get_dataset(make_config(str(tmp_path), name="kinetics401"))


def test_builtin_dataset_builds_itself_on_first_use(tmp_path, make_config):
    ds = get_dataset(make_config(str(tmp_path / "fresh"), name="moving_shapes/tiny"))
    assert ds.meta_data["num_train_examples"] == 40
    assert next(iter(ds.train_iter))["inputs"].ndim == 5


def test_ssv2_is_not_flipped_by_default(make_config):
    cfg = data_config.resolve({})
    assert pipeline._flip_default("something_something_v2", cfg) is False
    assert pipeline._flip_default("kinetics400", cfg) is True
    dmvr = data_config.resolve({"tables": {"train": "something-something-v2-train@8"}})
    assert pipeline._flip_default("video_tfrecord_dataset", dmvr) is False
    assert pipeline._flip_default(
        "something_something_v2", data_config.resolve({"random_flip": True})
    )


@pytest.mark.parametrize("threads, workers", [(1, 0), (3, 0), (2, 2)])
def test_batches_do_not_depend_on_threads_or_worker_processes(
    shapes_dir, make_config, threads, workers
):
    """Clips are a function of (seed, position): any number of decoding threads and worker
    processes (Grain's `mp_prefetch`) gives the same batches."""
    aug = dict(do_jitter_scale=True)
    reference = _take(get_dataset(make_config(shapes_dir, augmentation_params=aug)).train_iter, 3)
    config = make_config(
        shapes_dir, augmentation_params=aug, num_parallel_calls=threads, num_workers=workers
    )
    for a, b in zip(reference, _take(get_dataset(config).train_iter, 3)):
        _equal(a, b)


def test_decoding_runs_in_parallel_threads(shapes_dir, make_config, monkeypatch):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 schedulable cores")
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    clip = clips.ClipMaker._clip

    def slow(self, *args):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)  # Releases the GIL, as reading a video file does.
        with lock:
            state["now"] -= 1
        return clip(self, *args)

    monkeypatch.setattr(clips.ClipMaker, "_clip", slow)
    _take(get_dataset(make_config(shapes_dir, num_parallel_calls=4)).train_iter, 3)
    assert state["max"] >= 2
