"""The original's DMVR records: reading 'name@N' tables, multi-label, and format errors."""

import numpy as np
import pytest
import tensorflow as tf

from vivit_jax.data import dmvr, get_dataset
from vivit_jax.data.video_io import encode_jpeg


def _examples(n, num_frames=5, num_classes=4, multi=False):
    rng = np.random.default_rng(0)
    for i in range(n):
        frames = rng.integers(0, 255, (num_frames, 20, 24, 3), dtype=np.uint8)
        label = [i % num_classes, (i + 1) % num_classes] if multi else i % num_classes
        yield {
            "frames": [encode_jpeg(f) for f in frames],
            "label": label,
            "text": f"class{i % num_classes}",
            "name": f"video{i}.mp4",
        }


def _config(make_config, base_dir, tables, **overrides):
    config = make_config(
        None,
        name="video_tfrecord_dataset",
        batch_size=4,
        eval_batch_size=4,
        num_frames=4,
        stride=2,
        min_resize=16,
        crop_size=16,
        base_dir=base_dir,
        tables=tables,
        examples_per_subset={k: 0 for k in tables},
        num_classes=4,
        **overrides,
    )
    return config


def test_sharded_tables(tmp_path, make_config):
    spec = dmvr.write_records(str(tmp_path / "k.train.tfrecord"), _examples(10), num_shards=3)
    assert spec.endswith("@3") and (tmp_path / "k.train.tfrecord-00002-of-00003").exists()
    tables = {
        "train": "k.train.tfrecord@3",
        "validation": "k.train.tfrecord@3",
        "test": "k.train.tfrecord@3",
    }
    ds = get_dataset(_config(make_config, str(tmp_path), tables))
    assert ds.meta_data["num_train_examples"] == 10 and ds.meta_data["num_classes"] == 4
    batch = next(ds.train_iter)
    assert batch["inputs"].shape == (4, 4, 16, 16, 3)
    evals = list(ds.valid_iter())
    assert len(evals) == 3
    ids = np.concatenate([b["video_index"] for b in evals])
    labels = np.concatenate([b["label"] for b in evals])
    mask = np.concatenate([b["batch_mask"] for b in evals]) > 0
    assert sorted(ids[mask]) == list(range(10))
    # Shards are dealt round-robin: record r of shard s is example 3r + s, label (3r + s) % 4.
    src = dmvr.DmvrSource(dmvr.table_files(str(tmp_path), "k.train.tfrecord@3"))
    for i, lab in zip(ids[mask], labels[mask]):
        assert src.get(int(i))[1] == [lab]


def test_multi_label(tmp_path, make_config):
    dmvr.write_records(str(tmp_path / "m.tfrecord"), _examples(4, multi=True))
    tables = {"train": "m.tfrecord", "validation": "m.tfrecord", "test": "m.tfrecord"}
    ds = get_dataset(_config(make_config, str(tmp_path), tables, multi_label=True))
    assert ds.meta_data["target_is_onehot"]
    batch = next(ds.valid_iter())
    for i, row in zip(batch["video_index"], batch["label"]):
        want = np.zeros(4, np.float32)
        want[[i % 4, (i + 1) % 4]] = 1
        np.testing.assert_array_equal(row, want)


def _write_raw(path, serialized):
    with tf.io.TFRecordWriter(str(path)) as w:
        for s in serialized:
            w.write(s)


def _serialized(examples):
    out = []
    for ex in examples:
        seq = tf.train.SequenceExample()
        seq.context.feature[dmvr.LABEL_KEY].int64_list.value.append(ex["label"])
        for jpeg in ex["frames"]:
            seq.feature_lists.feature_list[dmvr.FRAMES_KEY].feature.add().bytes_list.value.append(
                jpeg
            )
        out.append(seq.SerializeToString())
    return out


def test_bad_records_name_file_record_and_feature(tmp_path, make_config):
    good = _serialized(_examples(3))
    # A tf.train.Example where a SequenceExample is expected, as record 2.
    example = tf.train.Example()
    example.features.feature["image/encoded"].bytes_list.value.append(b"x")
    example.features.feature["label"].int64_list.value.append(1)
    path = tmp_path / "bad-00000-of-00001"
    _write_raw(path, good[:2] + [example.SerializeToString()])
    with pytest.raises(
        dmvr.RecordFormatError,
        match=r"bad-00000-of-00001, record 2: missing context feature 'clip/label/index'.*tf.train.Example",
    ):
        dmvr.DmvrSource([str(path)]).get(2)
    tables = {"train": "bad@1", "validation": "bad@1", "test": "bad@1"}
    ds = get_dataset(_config(make_config, str(tmp_path), tables))  # record 0 is fine
    with pytest.raises(dmvr.RecordFormatError, match="record 2"):
        list(ds.valid_iter())

    # Label stored as text: the mismatch is named at start-up (record 0 is checked).
    seq = tf.train.SequenceExample.FromString(good[0])
    seq.context.feature[dmvr.LABEL_KEY].Clear()
    seq.context.feature[dmvr.LABEL_KEY].bytes_list.value.append(b"abseiling")
    _write_raw(tmp_path / "text-00000-of-00001", [seq.SerializeToString()])
    tables = {"train": "text@1", "validation": "text@1", "test": "text@1"}
    with pytest.raises(
        dmvr.RecordFormatError,
        match=r"text-00000-of-00001, record 0: context feature 'clip/label/index' is a bytes_list, expected int64_list",
    ):
        get_dataset(_config(make_config, str(tmp_path), tables))

    # No frames feature list.
    seq = tf.train.SequenceExample.FromString(good[0])
    del seq.feature_lists.feature_list[dmvr.FRAMES_KEY]
    with pytest.raises(dmvr.RecordFormatError, match=r"missing feature_lists\['image/encoded'\]"):
        dmvr.parse(seq.SerializeToString(), "f, record 0")


def test_missing_shards_and_config_keys(tmp_path, make_config):
    tables = {"train": "none@2", "validation": "none@2", "test": "none@2"}
    with pytest.raises(FileNotFoundError, match="none-00000-of-00002"):
        ds = get_dataset(_config(make_config, str(tmp_path), tables))
        next(ds.train_iter)
    config = _config(make_config, str(tmp_path), tables)
    config.dataset_configs.num_classes = None
    with pytest.raises(ValueError, match="dataset_configs.num_classes"):
        get_dataset(config)
