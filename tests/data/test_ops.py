"""Clip sampling (DMVR's formulas), the host's crops, and the device's augmentations, held
against the TensorFlow graph ops the original uses (`tf_reference_*.py`, kept for this)."""

import io

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.data import tf_reference_ops as ref_ops
from tests.data import tf_reference_randaugment as ref_randaugment
from vivit_jax.data import augment, host_ops
from vivit_jax.data import config as data_config


def test_train_indices_follow_dmvr():
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(300):
        idx = host_ops.train_indices(20, 4, 2, rng)
        offsets.add(int(idx[0]))
        np.testing.assert_array_equal(idx, idx[0] + np.arange(4) * 2)
    assert offsets == set(range(20 - 3 * 2))  # offset uniform in [0, n - (T-1)*stride)


def test_short_videos_wrap_around():
    np.testing.assert_array_equal(
        host_ops.train_indices(3, 5, 1, np.random.default_rng(0)) % 3,
        host_ops.train_indices(3, 5, 1, np.random.default_rng(0)),
    )
    np.testing.assert_array_equal(host_ops.central_indices(3, 5, 1), [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(host_ops.central_indices(3, 2, 2), [0, 2])


def test_central_and_linspace_indices():
    np.testing.assert_array_equal(host_ops.central_indices(20, 4, 2), [6, 8, 10, 12])
    np.testing.assert_array_equal(
        host_ops.linspace_indices(20, 3, 4, 2), [[0, 2, 4, 6], [6, 8, 10, 12], [12, 14, 16, 18]]
    )
    # One test clip is the central clip, as the original.
    np.testing.assert_array_equal(host_ops.test_indices(20, 1, 4, 2), [[6, 8, 10, 12]])


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _smooth_frame(h, w, seed=0):
    """A natural-ish frame (smooth, so JPEG and bilinear resizing keep it close)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 6, 3)
    frame = 127 + 100 * np.stack([np.sin(4 * xx + p) * np.cos(3 * yy - p) for p in phase], -1)
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w", [(30, 40), (40, 30), (24, 24)])
@pytest.mark.parametrize("crops", [1, 3])
def test_evaluation_crops_equal_the_originals(h, w, crops):
    """Resize the short side to 24, then the centre (or the three) 16×16 crops: the host's one
    box resize gives the TF graph's resize-then-crop, to interpolation rounding."""
    frame = _smooth_frame(h, w)
    data = _jpeg(frame)
    decoded = host_ops.decode_jpeg(data)
    resized = ref_ops.resize_smallest(tf.constant(decoded[None]), 24)
    if crops == 1:
        want = [ref_ops.central_crop(resized, 16).numpy()[0]]
    else:
        want = [ref_ops.spatial_crop(resized, 16, i).numpy()[0] for i in range(3)]
    for box, expected in zip(host_ops.crop_boxes(h, w, 24, 16, crops), want, strict=True):
        got = host_ops.cut_frames([data], [0], box, 16)[0]
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0


def test_three_crops_follow_the_orientation():
    # Landscape: left, centre, right; portrait: top, middle, bottom (Scenic's offsets).
    assert [b[:2] for b in host_ops.crop_boxes(8, 12, 8, 8, 3)] == [(0, 0), (2, 0), (4, 0)]
    assert [b[:2] for b in host_ops.crop_boxes(12, 8, 8, 8, 3)] == [(0, 0), (0, 2), (0, 4)]


def _train_cfg(**aug):
    return data_config.resolve(
        {"num_frames": 4, "min_resize": 24, "crop_size": 16, "augmentation_params": aug}
    )


def test_train_crops_have_the_originals_statistics():
    """Scale jitter + random crop + flip: over many clips, the box covers the same fraction of
    the frame, at the same offsets, as the TF graph's resize → jitter → crop."""
    cfg = _train_cfg(do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.33)
    h, w = 30, 40
    ours, theirs, flips = [], [], []
    for s in range(400):
        box, flip = host_ops.train_box(h, w, cfg, np.random.default_rng([7, s, 2]))
        ours.append(((box[2] - box[0]) / w, (box[3] - box[1]) / h, box[0] / w, box[1] / h))
        flips.append(flip)
        seed = tf.constant([7, s], tf.int64)
        x = tf.zeros([1, h, w, 3], tf.uint8)
        x = ref_ops.resize_smallest(x, 24)
        x = ref_ops.scale_jitter(x, seed, 0.9, 1.33, 1.0)
        x = ref_ops.ensure_min_size(x, 16)
        jh, jw = int(x.shape[1]), int(x.shape[2])
        theirs.append((16 / jw, 16 / jh))
    ours, theirs = np.array(ours), np.array(theirs)
    np.testing.assert_allclose(ours[:, :2].mean(0), theirs.mean(0), rtol=0.03)
    np.testing.assert_allclose(ours[:, :2].std(0), theirs.std(0), rtol=0.15)
    assert 0.4 < np.mean(flips) < 0.6
    assert (ours[:, 2] + ours[:, 0] <= 1 + 1e-6).all() and (
        ours[:, 3] + ours[:, 1] <= 1 + 1e-6
    ).all()


def test_host_clips_are_one_crop_and_flip_for_every_frame():
    cfg = _train_cfg(do_jitter_scale=True)
    frames = [_jpeg(_smooth_frame(30, 40, seed)) for seed in range(3)]
    for s in range(10):
        box, flip = host_ops.train_box(30, 40, cfg, np.random.default_rng([1, s, 2]))
        clip = host_ops.cut_frames(frames, [0, 1, 2, 0], box, 16, flip)
        assert clip.shape == (4, 16, 16, 3) and clip.dtype == np.uint8
        np.testing.assert_array_equal(clip[3], clip[0])  # same frame, same box and flip
        one = host_ops.cut_frames(frames[:1], [0], box, 16, flip)[0]
        np.testing.assert_array_equal(clip[0], one)


# ---------------------------------------------------------------------------------------------
# The device's ops against the original's TF ops.


def test_normalisation_is_the_originals():
    """Every uint8 value against the original's TF op: equal for [-1, 1], within 1 ulp for [0, 1]
    (XLA may divide by 255 as a multiplication by 1/255)."""
    frames = np.arange(256, dtype=np.uint8).reshape(1, 4, 8, 8)[..., None].repeat(3, -1)
    for zero in (True, False):
        want = ref_ops.normalize(tf.constant(frames), zero).numpy()
        got = np.asarray(jax.jit(augment.normalize, static_argnums=1)(frames, zero))
        assert got.dtype == np.float32 and got.min() == (-1 if zero else 0) and got.max() == 1
        np.testing.assert_array_max_ulp(got, want, maxulp=0 if zero else 1)
    floats = jnp.ones((1, 2), jnp.float32) * 0.3
    assert augment.normalize(floats, True) is floats  # already normalised: untouched


def test_hsv_round_trip_matches_tf():
    x = np.random.default_rng(0).uniform(0, 1, (50, 3)).astype(np.float32)
    np.testing.assert_allclose(augment.rgb_to_hsv(x), tf.image.rgb_to_hsv(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(x)), x, atol=1e-5)


def _clip(seed=0, t=3, h=12, w=12):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("op", range(augment.NUM_OPS + 1))
def test_each_randaugment_op_equals_the_originals(op):
    """Deterministic ops: the same result as the TF op (to one grey level of rounding); cutout:
    the same size of square, the same on every frame."""
    frames = _clip(op)
    key = jax.random.key(op)
    got = np.asarray(augment._ops(15, key)[op](jnp.asarray(frames, jnp.float32)))
    if op == 9:  # cutout: a random square
        masked = (got != frames).any(-1)
        assert (masked == masked[0]).all()  # one square for all frames
        return
    ref_list = ref_randaugment._ops(15, tf.constant([0, op], tf.int64)) + [tf.identity]
    want = ref_list[op](tf.constant(frames)).numpy().astype(np.float32)
    assert np.abs(got - want).max() <= 1.0, op


def test_randaugment_is_per_clip_and_the_same_on_every_frame():
    frame = _clip(3, t=1, h=16, w=16)
    clips = jnp.asarray(np.repeat(np.repeat(frame, 4, 0)[None], 6, 0))  # [6, 4, 16, 16, 3]
    cfg = augment.Augment(rand_augment=True, num_layers=2, magnitude=12)
    out = np.asarray(augment.augment_batch(clips, jax.random.key(0), cfg))
    assert out.shape == clips.shape and out.dtype == np.float32
    for clip in out:
        for t in range(1, 4):
            np.testing.assert_array_equal(clip[t], clip[0])
    assert len({clip.tobytes() for clip in out}) > 1  # each clip its own ops
    again = np.asarray(augment.augment_batch(clips, jax.random.key(0), cfg))
    np.testing.assert_array_equal(out, again)  # a function of the key


def test_colour_jitter_has_the_originals_statistics():
    """The same distribution of per-clip mean, contrast and saturation changes as DMVR's TF op
    (one draw per clip), over 300 clips, and one change for all frames of a clip."""
    frame = _smooth_frame(16, 16, 1)
    clip = np.repeat(frame[None], 2, 0)
    cfg = augment.Augment(color=True, prob_color_augment=1.0, prob_color_drop=0.0)
    batch = jnp.asarray(np.repeat(clip[None], 300, 0))
    ours = np.asarray(augment.augment_batch(batch, jax.random.key(1), cfg))
    np.testing.assert_array_equal(ours[:, 1], ours[:, 0])
    video = tf.constant(clip.astype(np.float32) / 127.5 - 1.0)
    theirs = np.stack(
        [
            ref_ops.color_augment(video, tf.constant([5, s], tf.int64), True, 1.0, 0.0).numpy()
            for s in range(300)
        ]
    )

    def stats(x):
        x = (x + 1) / 2
        grey = x.mean(-1)
        return np.stack([x.mean((1, 2, 3, 4)), grey.std((1, 2, 3)), x.std(-1).mean((1, 2, 3))], 1)

    a, b = stats(ours), stats(theirs)
    np.testing.assert_allclose(a.mean(0), b.mean(0), rtol=0.05, atol=0.01)
    np.testing.assert_allclose(a.std(0), b.std(0), rtol=0.2, atol=0.01)


def test_colour_drop_turns_clips_grey():
    cfg = augment.Augment(color=True, prob_color_augment=0.0, prob_color_drop=1.0)
    out = np.asarray(augment.augment_batch(jnp.asarray(_clip(1)[None]), jax.random.key(0), cfg))
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)
    np.testing.assert_allclose(out[..., 1], out[..., 2], atol=1e-6)


def test_augmentation_of_floats_is_refused():
    cfg = augment.Augment(rand_augment=True)
    with pytest.raises(ValueError, match="uint8 clips"):
        augment.augment_batch(jnp.zeros((1, 2, 4, 4, 3)), jax.random.key(0), cfg)


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
    with pytest.raises(ValueError, match="dataset_configs.num_workers=-2"):
        data_config.resolve({"num_workers": -2})


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
