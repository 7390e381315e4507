"""Augmentation on the device: normalisation, colour jitter and RandAugment of uint8 clips.

The host delivers uint8 `[B, T, H, W, 3]` clips (decoded, cropped, flipped); these jitted ops run
inside the train step, so the per-pixel float work costs the accelerator microseconds instead of
the host's cores. Every random draw is per clip and keyed from the step's rng and the clip's row
in the global batch (`fold_in(rng, row)`), so a resumed run draws exactly what the uninterrupted
run would have, on any number of devices or hosts; all frames of a clip get the same change.

Semantics are the original's (Scenic's `video_ops` / DMVR, `dataset_configs.augmentation_params`):
  * colour jitter (`do_color_augment`, DMVR's `color_default_augm`): with probability
    `prob_color_augment`, brightness ±32/255, saturation ×[0.6, 1.4], contrast ×[0.6, 1.4] (about
    each frame's mean) and hue ±0.2, in that order on [0, 1] values, then clipped; then with
    probability `prob_color_drop` the clip turns grey;
  * RandAugment (`do_rand_augment`, Scenic's `distort_image_with_randaugment` on video): each of
    `rand_augment_num_layers` layers picks one of 11 ops or identity uniformly and applies it at
    `rand_augment_magnitude`, with statistics (auto-contrast range, equalisation histogram,
    contrast mean) over the whole clip and one cutout square for all frames. It takes priority
    over colour jitter: with both on, only RandAugment runs, as in the original.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_MAX_LEVEL = 10.0
_REPLACE = 128.0
_GREY = jnp.array([0.2989, 0.5870, 0.1140], jnp.float32)  # tf.image.rgb_to_grayscale's weights


@dataclasses.dataclass(frozen=True)
class Augment:
    """What the train step does to its uint8 inputs (static: part of the compiled step).

    Attributes:
      zero_centering: values in [-1, 1]; else [0, 1].
      color: colour jitter (`do_color_augment`, unless `rand_augment`).
      prob_color_augment, prob_color_drop: its probabilities.
      rand_augment: RandAugment (`do_rand_augment`).
      num_layers, magnitude: its layers and magnitude.
    """

    zero_centering: bool = True
    color: bool = False
    prob_color_augment: float = 0.8
    prob_color_drop: float = 0.1
    rand_augment: bool = False
    num_layers: int = 2
    magnitude: float = 15.0

    @classmethod
    def from_config(cls, dataset_configs) -> Augment:
        aug = dataset_configs.augmentation_params
        return cls(
            zero_centering=bool(dataset_configs.zero_centering),
            color=bool(aug.do_color_augment) and not aug.do_rand_augment,
            prob_color_augment=float(aug.prob_color_augment),
            prob_color_drop=float(aug.prob_color_drop),
            rand_augment=bool(aug.do_rand_augment),
            num_layers=int(aug.rand_augment_num_layers),
            magnitude=float(aug.rand_augment_magnitude),
        )


def normalize(frames: jax.Array, zero_centering: bool = True) -> jax.Array:
    """uint8 frames → float32 in [-1, 1] (`zero_centering`) or [0, 1]; float inputs (already
    normalised) pass through unchanged."""
    if not jnp.issubdtype(frames.dtype, jnp.integer):
        return frames
    x = frames.astype(jnp.float32)
    return x * (2.0 / 255.0) - 1.0 if zero_centering else x / 255.0


def augment_batch(frames: jax.Array, rng: jax.Array, augment: Augment) -> jax.Array:
    """uint8 `[B, T, H, W, 3]` → augmented, normalised float32 (see the module docstring).

    Raises:
      ValueError: augmentation is asked of float inputs (they must come as uint8).
    """
    if not (augment.color or augment.rand_augment):
        return normalize(frames, augment.zero_centering)
    if frames.dtype != jnp.uint8:
        raise ValueError(
            f"Colour jitter and RandAugment run on uint8 clips; the inputs are {frames.dtype}."
        )
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(frames.shape[0]))
    if augment.rand_augment:
        frames = jax.vmap(lambda c, k: randaugment(c, k, augment.num_layers, augment.magnitude))(
            frames, keys
        )
        return normalize(frames, augment.zero_centering)
    x = frames.astype(jnp.float32) / 255.0
    x = jax.vmap(lambda c, k: color_jitter(c, k, augment))(x, keys)
    return x * 2.0 - 1.0 if augment.zero_centering else x


# ---------------------------------------------------------------------------------------------
# Colour jitter on one [T, H, W, 3] clip in [0, 1].


def rgb_to_hsv(x: jax.Array) -> jax.Array:
    """As `tf.image.rgb_to_hsv`: h, s, v in [0, 1]."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = jnp.max(x, axis=-1)
    delta = v - jnp.min(x, axis=-1)
    s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
    safe = jnp.where(delta > 0, delta, 1.0)
    h = jnp.where(
        v == r, (g - b) / safe, jnp.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    h = jnp.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(x: jax.Array) -> jax.Array:
    """As `tf.image.hsv_to_rgb`."""
    h, s, v = x[..., 0], x[..., 1], x[..., 2]
    k = (jnp.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def color_jitter(clip: jax.Array, rng: jax.Array, augment: Augment) -> jax.Array:
    """DMVR's `color_default_augm` on one clip in [0, 1], one draw for all its frames."""
    k = jax.random.split(rng, 6)
    brightness = jax.random.uniform(k[0], (), minval=-32.0 / 255.0, maxval=32.0 / 255.0)
    saturation = jax.random.uniform(k[1], (), minval=0.6, maxval=1.4)
    contrast = jax.random.uniform(k[2], (), minval=0.6, maxval=1.4)
    hue = jax.random.uniform(k[3], (), minval=-0.2, maxval=0.2)
    y = clip + brightness
    hsv = rgb_to_hsv(y)
    y = hsv_to_rgb(hsv.at[..., 1].set(jnp.clip(hsv[..., 1] * saturation, 0.0, 1.0)))
    mean = jnp.mean(y, axis=(1, 2), keepdims=True)  # per frame and channel, as adjust_contrast
    y = (y - mean) * contrast + mean
    hsv = rgb_to_hsv(y)
    y = hsv_to_rgb(hsv.at[..., 0].set((hsv[..., 0] + hue) % 1.0))
    y = jnp.clip(y, 0.0, 1.0)
    y = jnp.where(jax.random.uniform(k[4]) < augment.prob_color_augment, y, clip)
    grey = jnp.broadcast_to(jnp.sum(y * _GREY, axis=-1, keepdims=True), y.shape)
    return jnp.where(jax.random.uniform(k[5]) < augment.prob_color_drop, grey, y)


# ---------------------------------------------------------------------------------------------
# RandAugment on one uint8 [T, H, W, 3] clip; ops compute in float32 on values 0..255.


def _blend(image, degenerate, factor):
    return jnp.clip(jnp.round(degenerate + factor * (image - degenerate)), 0.0, 255.0)


def _grey(image):
    """`tf.image.rgb_to_grayscale` of uint8 values: computed on [0, 1], then back to uint8 the
    way `tf.image.convert_image_dtype` does it (× 255.5, truncated)."""
    grey = jnp.sum((image / 255.0) * _GREY, axis=-1, keepdims=True)
    return jnp.floor(jnp.clip(grey, 0.0, 1.0) * 255.5)


def autocontrast(x):
    lo = jnp.min(x, axis=(0, 1, 2), keepdims=True)
    hi = jnp.max(x, axis=(0, 1, 2), keepdims=True)
    scale = jnp.where(hi > lo, 255.0 / jnp.maximum(hi - lo, 1e-6), 1.0)
    return jnp.floor(jnp.clip((x - jnp.where(hi > lo, lo, 0.0)) * scale, 0.0, 255.0))


def _equalize_channel(c):
    values = c.astype(jnp.int32)
    hist = jnp.bincount(values.ravel(), length=256)
    last = hist[255 - jnp.argmax((hist[::-1] > 0).astype(jnp.int32))]
    step = (jnp.sum(hist) - last) // 255
    table = (jnp.cumsum(hist) + step // 2) // jnp.maximum(step, 1)
    table = jnp.clip(jnp.concatenate([jnp.zeros(1, table.dtype), table[:-1]]), 0, 255)
    return jnp.where(step > 0, table[values], values).astype(jnp.float32)


def equalize(x):
    return jnp.stack([_equalize_channel(x[..., i]) for i in range(3)], axis=-1)


def sharpness(x, factor):
    """Blend with a 3×3 smoothed copy (borders kept), per frame."""
    kernel = jnp.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], jnp.float32) / 13.0
    frames = x.transpose(0, 3, 1, 2).reshape(-1, 1, *x.shape[1:3])  # [T*3, 1, H, W]
    smooth = jax.lax.conv_general_dilated(frames, kernel[None, None], (1, 1), "VALID")
    smooth = jnp.clip(jnp.round(smooth), 0.0, 255.0)
    smooth = smooth.reshape(x.shape[0], 3, x.shape[1] - 2, x.shape[2] - 2).transpose(0, 2, 3, 1)
    degenerate = x.at[:, 1:-1, 1:-1, :].set(smooth)
    return _blend(x, degenerate, factor)


def cutout(x, pad: int, rng):
    ky, kx = jax.random.split(rng)
    h, w = x.shape[1], x.shape[2]
    cy = jax.random.randint(ky, (), 0, h)
    cx = jax.random.randint(kx, (), 0, w)
    ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = (ys >= cy - pad) & (ys < cy + pad) & (xs >= cx - pad) & (xs < cx + pad)
    return jnp.where(inside[None, :, :, None], _REPLACE, x)


def _ops(magnitude: float, rng) -> list:
    """The 11 ops with parameters from `magnitude`, as the TF Model Garden's level_to_arg."""
    m = float(magnitude)
    enhance = (m / _MAX_LEVEL) * 1.8 + 0.1
    shift = 8 - min(int(m / _MAX_LEVEL * 4), 8)
    threshold = int(m / _MAX_LEVEL * 256)
    addition = int(m / _MAX_LEVEL * 110)
    return [
        autocontrast,
        equalize,
        lambda x: 255.0 - x,  # invert
        lambda x: jnp.floor(x / 2**shift) * 2**shift,  # posterize
        lambda x: jnp.where(x < threshold, x, 255.0 - x),  # solarize
        lambda x: _blend(x, _grey(x), enhance),  # color
        lambda x: _blend(x, jnp.full_like(x, jnp.mean(_grey(x))), enhance),  # contrast
        lambda x: _blend(x, jnp.zeros_like(x), enhance),  # brightness
        lambda x: sharpness(x, enhance),
        lambda x: cutout(x, int(m / _MAX_LEVEL * 40), rng),
        lambda x: jnp.where(x < 128, jnp.clip(x + addition, 0.0, 255.0), x),  # solarize_add
        lambda x: x,  # identity
    ]


NUM_OPS = 11


def randaugment(clip: jax.Array, rng: jax.Array, num_layers: int, magnitude: float) -> jax.Array:
    """`num_layers` random ops (or identity), the same on every frame of uint8 `clip`."""
    x = clip.astype(jnp.float32)
    for layer in range(num_layers):
        choice_key, op_key = jax.random.split(jax.random.fold_in(rng, layer))
        choice = jax.random.randint(choice_key, (), 0, NUM_OPS + 1)
        x = jax.lax.switch(choice, _ops(magnitude, op_key), x)
    return x.astype(jnp.uint8)
