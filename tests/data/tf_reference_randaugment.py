"""RandAugment for clips: the same operation, with the same parameters, on every frame.

The op set and the magnitude → parameter mapping are those of Scenic's
`video_ops.distort_image_with_randaugment` (which uses the TF Model Garden's image RandAugment):
no geometric ops (rotate, shear, translate), a cutout at one location for all frames, each of the
`num_layers` layers picks one of the 11 ops or identity uniformly and always applies it.
Statistics (auto-contrast range, equalisation histogram, contrast mean) are computed over the
whole clip so that all frames are transformed identically. Stateless: keyed on `seed`.
"""

from __future__ import annotations

import tensorflow as tf

from tests.data.tf_reference_ops import fold

_MAX_LEVEL = 10.0
_REPLACE = 128


def _blend(image, degenerate, factor):
    """image + factor * (image - degenerate), clipped; works in float, returns uint8."""
    image = tf.cast(image, tf.float32)
    degenerate = tf.cast(degenerate, tf.float32)
    out = degenerate + factor * (image - degenerate)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def _grayscale(image):
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def autocontrast(image):
    """Per channel, stretch [min, max] of the clip to [0, 255]."""
    x = tf.cast(image, tf.float32)
    lo = tf.reduce_min(x, axis=[0, 1, 2], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1, 2], keepdims=True)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1e-6), 1.0)
    offset = tf.where(hi > lo, lo, 0.0)
    return tf.cast(tf.clip_by_value((x - offset) * scale, 0.0, 255.0), tf.uint8)


def equalize(image):
    """Per channel histogram equalisation over the clip (PIL's algorithm)."""

    def channel(c):
        c = tf.cast(c, tf.int32)
        hist = tf.math.bincount(tf.reshape(c, [-1]), minlength=256, maxlength=256)
        nonzero = tf.boolean_mask(hist, hist > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

        def lut():
            table = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
            table = tf.concat([[0], table[:-1]], 0)
            return tf.gather(tf.clip_by_value(table, 0, 255), c)

        return tf.cast(tf.cond(step > 0, lut, lambda: c), tf.uint8)

    return tf.stack([channel(image[..., i]) for i in range(3)], axis=-1)


def invert(image):
    return 255 - image


def posterize(image, bits: int):
    shift = 8 - bits
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold: int):
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition: int, threshold: int = 128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def color(image, factor):
    return _blend(image, _grayscale(image), factor)


def contrast(image, factor):
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return _blend(image, tf.fill(tf.shape(image), mean), factor)


def brightness(image, factor):
    return _blend(image, tf.zeros_like(image), factor)


def sharpness(image, factor):
    """Blend with a 3×3 smoothed copy (borders kept), per frame with the same factor."""
    x = tf.cast(image, tf.float32)
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], padding="VALID")
    smooth = tf.clip_by_value(tf.round(smooth), 0.0, 255.0)
    smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
    mask = tf.pad(tf.ones_like(smooth[:, 1:-1, 1:-1, :]), [[0, 0], [1, 1], [1, 1], [0, 0]])
    degenerate = mask * smooth + (1.0 - mask) * x
    return _blend(x, degenerate, factor)


def cutout(image, pad_size: int, seed):
    """Grey square of side 2*pad_size at one random centre, the same on every frame."""
    shape = tf.shape(image)
    h, w = shape[1], shape[2]
    cy = tf.random.stateless_uniform([], seed=fold(seed, 1), maxval=h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed=fold(seed, 2), maxval=w, dtype=tf.int32)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    inside = (
        (ys >= cy - pad_size) & (ys < cy + pad_size) & (xs >= cx - pad_size) & (xs < cx + pad_size)
    )
    return tf.where(inside[None, :, :, None], tf.constant(_REPLACE, tf.uint8), image)


def _enhance(level):
    return (level / _MAX_LEVEL) * 1.8 + 0.1


def _ops(magnitude: float, seed):
    """The 11 ops with parameters from `magnitude`, as in the TF Model Garden's level_to_arg."""
    m = float(magnitude)
    return [
        autocontrast,
        equalize,
        invert,
        lambda x: posterize(x, min(int(m / _MAX_LEVEL * 4), 8)),
        lambda x: solarize(x, int(m / _MAX_LEVEL * 256)),
        lambda x: color(x, _enhance(m)),
        lambda x: contrast(x, _enhance(m)),
        lambda x: brightness(x, _enhance(m)),
        lambda x: sharpness(x, _enhance(m)),
        lambda x: cutout(x, int(m / _MAX_LEVEL * 40), seed),
        lambda x: solarize_add(x, int(m / _MAX_LEVEL * 110)),
    ]


NUM_OPS = 11


def randaugment(frames: tf.Tensor, num_layers: int, magnitude: float, seed) -> tf.Tensor:
    """Applies `num_layers` random ops (or identity) to uint8 `frames` `[T, H, W, 3]`."""
    for layer in range(num_layers):
        layer_seed = fold(seed, 100 + layer)
        choice = tf.random.stateless_uniform(
            [], seed=fold(layer_seed, 0), maxval=NUM_OPS + 1, dtype=tf.int32
        )
        ops = _ops(magnitude, fold(layer_seed, 1))
        branches = [lambda op=op, x=frames: op(x) for op in ops]
        frames = tf.switch_case(choice, branches, default=lambda x=frames: tf.identity(x))
    return frames
