"""Clip sampling, decoding, resizing, crops, flips and colour jitter.

Frame sampling follows DMVR (`dmvr/processors.py`) exactly and is plain numpy, so the input
pipeline reads only the encoded frames it will use. The image ops are TensorFlow graph ops; all
randomness is stateless and keyed on a per-example seed, which makes every clip a pure function
of (seed, position in the stream) — the basis of exact resume. Every random decision is drawn
once per clip, so all frames of a clip get the same crop, flip and colour change.
RandAugment lives in `randaugment.py`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# ---------------------------------------------------------------------------------------------
# Frame sampling (numpy). Indices wrap around (modulo the video length) when a clip needs more
# frames than the video has, as DMVR's `sample_or_pad_sequence_indices(repeat_sequence=True)`.


def train_indices(num_video_frames: int, num_frames: int, stride: int, rng) -> np.ndarray:
    """Random clip: offset uniform in [0, max(n - (num_frames - 1) * stride, 1))."""
    max_offset = max(num_video_frames - (num_frames - 1) * stride, 1)
    offset = int(rng.integers(0, max_offset))
    return (offset + np.arange(num_frames) * stride) % num_video_frames


def central_indices(num_video_frames: int, num_frames: int, stride: int) -> np.ndarray:
    """Central clip: offset max(0, (n - num_frames * stride) // 2)."""
    offset = max(0, (num_video_frames - num_frames * stride) // 2)
    return (offset + np.arange(num_frames) * stride) % num_video_frames


def linspace_indices(
    num_video_frames: int, num_clips: int, num_frames: int, stride: int
) -> np.ndarray:
    """`num_clips` clips with offsets evenly spaced in [0, max(0, n - num_frames * stride)].

    Returns:
      int array `[num_clips, num_frames]`.
    """
    max_offset = max(0, num_video_frames - num_frames * stride)
    offsets = np.linspace(0.0, float(max_offset), num_clips).astype(np.float32).astype(np.int64)
    steps = np.arange(num_frames) * stride
    return (offsets[:, None] + steps[None, :]) % num_video_frames


def test_indices(num_video_frames: int, num_clips: int, num_frames: int, stride: int):
    """Test clips as the original: the central clip when `num_clips == 1`, else linspace."""
    if num_clips == 1:
        return central_indices(num_video_frames, num_frames, stride)[None]
    return linspace_indices(num_video_frames, num_clips, num_frames, stride)


# ---------------------------------------------------------------------------------------------
# Randomness.


def fold(seed: tf.Tensor, tag: int) -> tf.Tensor:
    """A new stateless seed from `seed` ([2] int) and a constant tag naming the decision."""
    return tf.random.experimental.stateless_fold_in(seed, tag)


def _uniform(seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval)


# ---------------------------------------------------------------------------------------------
# Decoding and geometry. Frames are uint8 `[T, H, W, 3]` unless stated otherwise.


def decode_frames(encoded: tf.Tensor, gather: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG frames `encoded` [U] and returns them in the order `gather` [N]."""
    frames = tf.map_fn(
        lambda x: tf.io.decode_jpeg(x, channels=3),
        encoded,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
    return tf.gather(frames, gather)


def resize_smallest(frames: tf.Tensor, min_resize: int) -> tf.Tensor:
    """Bilinear resize so that min(H, W) == min_resize (DMVR's `resize_smallest`)."""
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    out_h = tf.maximum(min_resize, (h * min_resize) // w)
    out_w = tf.maximum(min_resize, (w * min_resize) // h)

    def resize():
        return tf.cast(tf.image.resize(frames, (out_h, out_w), method="bilinear"), frames.dtype)

    return tf.cond(
        tf.logical_or(tf.not_equal(h, out_h), tf.not_equal(w, out_w)), resize, lambda: frames
    )


def scale_jitter(frames, seed, min_factor: float, max_factor: float, prob: float):
    """With probability `prob`, rescale H and W by independent factors in [min, max)."""
    h_scale = _uniform(fold(seed, 1), min_factor, max_factor)
    w_scale = _uniform(fold(seed, 2), min_factor, max_factor)
    coin = _uniform(fold(seed, 3))
    shape = tf.shape(frames)

    def jitter():
        size = tf.stack(
            [
                tf.cast(h_scale * tf.cast(shape[1], tf.float32), tf.int32),
                tf.cast(w_scale * tf.cast(shape[2], tf.float32), tf.int32),
            ]
        )
        return tf.cast(tf.image.resize(frames, size, method="bilinear"), frames.dtype)

    return tf.cond(coin < prob, jitter, lambda: frames)


def ensure_min_size(frames: tf.Tensor, size: int) -> tf.Tensor:
    """Upscales (short side to `size`) only if a side is smaller than `size`.

    Scale jitter below 1 can shrink a frame under the crop size; the original would crash there.
    """
    shape = tf.shape(frames)
    return tf.cond(
        tf.minimum(shape[1], shape[2]) < size, lambda: resize_smallest(frames, size), lambda: frames
    )


def random_crop(frames: tf.Tensor, size: int, seed) -> tf.Tensor:
    """The same random `size`×`size` window on every frame."""
    shape = tf.shape(frames)
    max_y = shape[1] - size + 1
    max_x = shape[2] - size + 1
    y = tf.random.stateless_uniform([], seed=fold(seed, 4), maxval=max_y, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed=fold(seed, 5), maxval=max_x, dtype=tf.int32)
    return frames[:, y : y + size, x : x + size, :]


def central_crop(frames: tf.Tensor, size: int) -> tf.Tensor:
    """Central `size`×`size` crop (DMVR's `resize_with_crop_or_pad`)."""
    return tf.image.resize_with_crop_or_pad(frames, size, size)


def spatial_crop(frames: tf.Tensor, size: int, index: int) -> tf.Tensor:
    """One of the three test crops: 0/1/2 = left/centre/right (top/middle/bottom if portrait).

    Offsets as Scenic's `deterministic_crop`: ceil((side - size) / 2) for the centre.
    """
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    y = tf.cast(tf.math.ceil((h - size) / 2), tf.int32)
    x = tf.cast(tf.math.ceil((w - size) / 2), tf.int32)
    portrait = h > w
    if index == 0:
        y = tf.where(portrait, 0, y)
        x = tf.where(portrait, x, 0)
    elif index == 2:
        y = tf.where(portrait, h - size, y)
        x = tf.where(portrait, x, w - size)
    return frames[:, y : y + size, x : x + size, :]


def random_flip(frames: tf.Tensor, seed) -> tf.Tensor:
    """Flips all frames left-right together with probability 1/2."""
    coin = _uniform(fold(seed, 6))
    return tf.cond(coin < 0.5, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def normalize(frames: tf.Tensor, zero_centering: bool) -> tf.Tensor:
    """uint8 → float32 in [-1, 1] (zero_centering) or [0, 1]."""
    frames = tf.cast(frames, tf.float32)
    if zero_centering:
        return frames * (2.0 / 255.0) - 1.0
    return frames / 255.0


def color_augment(
    frames: tf.Tensor,
    seed,
    zero_centering: bool,
    prob_color_augment: float,
    prob_color_drop: float,
) -> tf.Tensor:
    """DMVR's `color_default_augm`, stateless: brightness, saturation, contrast, hue, then
    optionally grey. One draw per clip, so every frame changes the same way. Input and output
    are normalised float32."""

    def augment(video):
        if zero_centering:
            video = 0.5 * (video + 1.0)
        video = tf.image.stateless_random_brightness(video, 32.0 / 255.0, seed=fold(seed, 11))
        video = tf.image.stateless_random_saturation(video, 0.6, 1.4, seed=fold(seed, 12))
        video = tf.image.stateless_random_contrast(video, 0.6, 1.4, seed=fold(seed, 13))
        video = tf.image.stateless_random_hue(video, 0.2, seed=fold(seed, 14))
        video = tf.clip_by_value(video, 0.0, 1.0)
        if zero_centering:
            video = 2.0 * (video - 0.5)
        return video

    def drop(video):
        return tf.tile(tf.image.rgb_to_grayscale(video), [1, 1, 1, 3])

    frames = tf.cond(
        _uniform(fold(seed, 15)) < prob_color_augment, lambda: augment(frames), lambda: frames
    )
    return tf.cond(_uniform(fold(seed, 16)) < prob_color_drop, lambda: drop(frames), lambda: frames)
