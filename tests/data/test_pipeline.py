"""get_dataset on moving_shapes/tiny (40 train / 20 validation / 12 test videos, 8×16×16)."""

import itertools
import os
import threading
import time

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_jax.data import get_dataset, pipeline
from vivit_jax.data.sources import DatasetNotFoundError


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
    assert batch["inputs"].shape == (8, 8, 16, 16, 3) and batch["inputs"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (8,)
    np.testing.assert_array_equal(batch["batch_mask"], np.ones(8, np.float32))
    assert -1.0 <= batch["inputs"].min() and batch["inputs"].max() <= 1.0
    assert batch["inputs"].min() < -0.5 and batch["inputs"].max() > 0.5


def test_one_epoch_visits_every_example_once(shapes_dir, make_config):
    """5 steps × 8 = one epoch of 40: a permutation; the next epoch is a different one."""
    ds = get_dataset(make_config(shapes_dir, zero_centering=False))
    fetcher_batches = _take(ds.train_iter, 10)
    assert 0.0 <= fetcher_batches[0]["inputs"].min()
    split = pipeline._Split  # the permutation is seeded per epoch
    del split
    labels = np.concatenate([b["label"] for b in fetcher_batches[:5]])
    assert np.bincount(labels, minlength=8).tolist() == [5] * 8


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
    original = pipeline._Fetcher._fetch

    def spy(self, position):
        positions.append(position)
        return original(self, position)

    monkeypatch.setattr(pipeline._Fetcher, "_fetch", spy)
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
    # Labels are the stored ones.
    builder = tfds.builder("moving_shapes/tiny", data_dir=shapes_dir)
    from vivit_jax.data.sources import TfdsSource

    src = TfdsSource(builder, "validation")
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
    builder = tfds.builder("moving_shapes/tiny", data_dir=shapes_dir)
    from vivit_jax.data.sources import TfdsSource

    src = TfdsSource(builder, "test")
    seen = []
    for batch in ds.test_iter():
        assert batch["inputs"].shape == (5, 6, 3, 12, 12, 3)
        for row in range(5):
            vid = int(batch["video_index"][row])
            if vid < 0:
                continue
            seen.append(vid)
            frames = src.get(vid)[0]
            video = np.stack([tf.io.decode_jpeg(f).numpy() for f in frames])  # 8 frames, 16×16
            # offsets linspace(0, 8 - 3*2, 2) = [0, 2]; a square frame is cropped as landscape:
            # y = ceil((16 - 12) / 2) = 2, x = 0 / 2 / 4.
            for crop, x in enumerate([0, 2, 4]):
                for clip, offset in enumerate([0, 2]):
                    want = video[offset : offset + 6 : 2, 2:14, x : x + 12].astype(np.float32)
                    got = batch["inputs"][row, crop * 2 + clip]
                    np.testing.assert_allclose(got, want / 127.5 - 1.0, atol=1e-5)
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
    cfg = pipeline.config_lib.resolve({})
    assert pipeline._flip_default("something_something_v2", cfg) is False
    assert pipeline._flip_default("kinetics400", cfg) is True
    dmvr = pipeline.config_lib.resolve({"tables": {"train": "something-something-v2-train@8"}})
    assert pipeline._flip_default("video_tfrecord_dataset", dmvr) is False
    assert pipeline._flip_default(
        "something_something_v2", pipeline.config_lib.resolve({"random_flip": True})
    )


def test_pipelines_decode_in_parallel_without_tf_data_autotuning(
    shapes_dir, make_config, monkeypatch
):
    """tf.data's autotuning thread can hold up the deletion of an iterator for the rest of its
    sleep (up to a minute; seen as `python -m vivit_jax.main` waiting ~30 s after its last log
    line in half the runs): TF 2.21 wakes it for cancellation before marking the iterator
    cancelled, so it can go back to sleep. Every split's pipeline runs without it, and its
    parallel map (num_parallel_calls=-1) still fetches several examples at once."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 schedulable cores")
    datasets, lock, state = [], threading.Lock(), {"now": 0, "max": 0}
    make_dataset, fetch = pipeline._Split.tf_dataset, pipeline._Fetcher._fetch

    def recording_make_dataset(self, *args, **kwargs):
        datasets.append(make_dataset(self, *args, **kwargs))
        return datasets[-1]

    def slow_fetch(self, position):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)  # Releases the GIL, as reading a video file does.
        with lock:
            state["now"] -= 1
        return fetch(self, position)

    monkeypatch.setattr(pipeline._Split, "tf_dataset", recording_make_dataset)
    monkeypatch.setattr(pipeline._Fetcher, "_fetch", slow_fetch)
    ds = get_dataset(make_config(shapes_dir))
    _take(ds.train_iter, 3)
    assert state["max"] >= 2
    list(ds.valid_iter())
    list(ds.test_iter())
    assert len(datasets) == 3
    for dataset in datasets:
        assert dataset.options().autotune.enabled is False
        if hasattr(type(dataset.options().autotune), "initial_parallelism"):
            assert dataset.options().autotune.initial_parallelism == len(os.sched_getaffinity(0))
