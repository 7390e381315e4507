"""Clip sampling (DMVR's formulas), crops, and augmentations that treat a clip as one image."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from vivit_jax.data import config as data_config
from vivit_jax.data import ops, pipeline, randaugment


def test_train_indices_follow_dmvr():
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(300):
        idx = ops.train_indices(20, 4, 2, rng)
        offsets.add(int(idx[0]))
        np.testing.assert_array_equal(idx, idx[0] + np.arange(4) * 2)
    assert offsets == set(range(20 - 3 * 2))  # offset uniform in [0, n - (T-1)*stride)


def test_short_videos_wrap_around():
    np.testing.assert_array_equal(
        ops.train_indices(3, 5, 1, np.random.default_rng(0)) % 3,
        ops.train_indices(3, 5, 1, np.random.default_rng(0)),
    )
    np.testing.assert_array_equal(ops.central_indices(3, 5, 1), [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(ops.central_indices(3, 2, 2), [0, 2])


def test_central_and_linspace_indices():
    np.testing.assert_array_equal(ops.central_indices(20, 4, 2), [6, 8, 10, 12])
    np.testing.assert_array_equal(
        ops.linspace_indices(20, 3, 4, 2), [[0, 2, 4, 6], [6, 8, 10, 12], [12, 14, 16, 18]]
    )
    # One test clip is the central clip, as the original.
    np.testing.assert_array_equal(ops.test_indices(20, 1, 4, 2), [[6, 8, 10, 12]])


def _coords(t, h, w):
    """Frames whose pixels encode their own (y, x) position."""
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
    return tf.constant(np.repeat(frame[None], t, 0))


@pytest.mark.parametrize(
    "h,w,expected",
    [
        (8, 12, [(0, 0), (0, 2), (0, 4)]),  # landscape: left, centre, right
        (12, 8, [(0, 0), (2, 0), (4, 0)]),  # portrait: top, middle, bottom
    ],
)
def test_three_spatial_crops(h, w, expected):
    frames = _coords(2, h, w)
    for i, (y, x) in enumerate(expected):
        crop = ops.spatial_crop(frames, 8, i).numpy()
        assert crop.shape == (2, 8, 8, 3)
        assert (crop[0, 0, 0, 0], crop[0, 0, 0, 1]) == (y, x)


def test_resize_smallest_keeps_aspect():
    frames = tf.zeros([2, 30, 40, 3], tf.uint8)
    assert ops.resize_smallest(frames, 15).shape == (2, 15, 20, 3)
    assert ops.resize_smallest(tf.zeros([1, 40, 30, 3], tf.uint8), 15).shape == (1, 20, 15, 3)


def _augment_config(**aug):
    cfg = data_config.resolve(
        {"num_frames": 4, "min_resize": 24, "crop_size": 16, "augmentation_params": aug}
    )
    return cfg


ALL_AUGS = dict(do_jitter_scale=True, do_color_augment=True, prob_color_augment=1.0)


@pytest.mark.parametrize(
    "aug",
    [ALL_AUGS, dict(do_jitter_scale=True, do_rand_augment=True, rand_augment_magnitude=10)],
)
def test_train_augmentations_identical_across_frames(aug):
    """A clip of identical frames stays a clip of identical frames, for many seeds."""
    cfg = _augment_config(**aug)
    rng = np.random.default_rng(0)
    frame = tf.io.encode_jpeg(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    for s in range(12):
        clip = pipeline._train_clip(
            tf.stack([frame]), tf.zeros([4], tf.int32), tf.constant([1, s], tf.int64), cfg, True
        ).numpy()
        assert clip.shape == (4, 16, 16, 3)
        assert clip.min() >= -1.0 and clip.max() <= 1.0
        for t in range(1, 4):
            np.testing.assert_array_equal(clip[t], clip[0])


@pytest.mark.parametrize("op", range(randaugment.NUM_OPS + 1))
def test_each_randaugment_op_is_the_same_on_every_frame(op, monkeypatch):
    rng = np.random.default_rng(op)
    frames = tf.constant(np.repeat(rng.integers(0, 255, (1, 12, 12, 3), np.uint8), 3, 0))
    ops_list = randaugment._ops(15, tf.constant([0, op], tf.int64)) + [tf.identity]
    out = ops_list[op](frames).numpy()
    assert out.dtype == np.uint8 and out.shape == (3, 12, 12, 3)
    np.testing.assert_array_equal(out[1], out[0])
    np.testing.assert_array_equal(out[2], out[0])


def test_augmentation_is_a_function_of_the_seed():
    cfg = _augment_config(**ALL_AUGS)
    frame = tf.io.encode_jpeg(np.random.default_rng(1).integers(0, 255, (30, 40, 3), np.uint8))

    def clip(s):
        return pipeline._train_clip(
            tf.stack([frame]), tf.zeros([4], tf.int32), tf.constant([3, s], tf.int64), cfg, True
        ).numpy()

    np.testing.assert_array_equal(clip(5), clip(5))
    assert not np.array_equal(clip(5), clip(6))


def test_value_ranges():
    x = tf.constant([[[[0, 255, 128]]]], tf.uint8)
    np.testing.assert_allclose(
        ops.normalize(x, True).numpy().ravel(), [-1, 1, 128 / 127.5 - 1], atol=1e-6
    )
    np.testing.assert_allclose(
        ops.normalize(x, False).numpy().ravel(), [0, 1, 128 / 255], atol=1e-6
    )


def test_config_errors_name_the_key():
    with pytest.raises(
        ValueError,
        match=r"'dataset_configs\.num_frame'. Did you mean 'dataset_configs\.num_frames'",
    ):
        data_config.resolve({"num_frame": 8})
    with pytest.raises(ValueError, match="augmentation_params.do_rand_augmnt"):
        data_config.resolve({"augmentation_params": {"do_rand_augmnt": True}})
    with pytest.raises(ValueError, match="dataset_configs.min_resize"):
        data_config.resolve({"min_resize": 100, "crop_size": 224})
    with pytest.raises(ValueError, match="prob_color_drop"):
        data_config.resolve({"augmentation_params": {"prob_color_drop": 2.0}})


def test_defaults_cover_scenic_keys():
    keys = set(data_config.default_dataset_configs())
    scenic = {
        "num_frames",
        "stride",
        "min_resize",
        "crop_size",
        "one_hot_labels",
        "zero_centering",
        "do_multicrop_test",
        "log_test_epochs",
        "num_test_clips",
        "test_batch_size",
        "do_three_spatial_crops",
        "augmentation_params",
        "prefetch_to_device",
        "base_dir",
        "tables",
        "examples_per_subset",
        "num_classes",
    }
    assert scenic <= keys
    assert isinstance(data_config.default_dataset_configs(), ml_collections.ConfigDict)
