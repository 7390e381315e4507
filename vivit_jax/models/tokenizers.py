"""Video tokenisers (tubelets, uniform frame sampling) and learned position embeddings.

The tokeniser's convolution is named `embedding` and the position embedding
`posembed_input/pos_embedding`, as in Scenic (a checkpoint contract).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.models.layers import Dtype

TOKENIZER_METHODS = ("3d_conv", "temporal_sampling")
KERNEL_INIT_METHODS = (None, "central_frame_initializer", "average_frame_initializer")
# Flax's default convolution kernel initialiser, the base of the original's tubelet inits.
DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()


def central_frame_initializer(base=DEFAULT_KERNEL_INIT):
    """Random 3D kernel `(t, h, w, c_in, c_out)` that only looks at the central frame.

    Fix, not copy: Scenic's version zeroes slices of the kernel's *width* axis; this one zeroes
    every temporal index except `t // 2`, as the paper describes.
    """

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 5:
            raise ValueError(f"central_frame_initializer needs a 5-d kernel, got shape {shape}.")
        kernel = base(key, shape, dtype)
        centre = shape[0] // 2
        mask = (jnp.arange(shape[0]) == centre).astype(dtype)
        return kernel * mask[:, None, None, None, None]

    return init


def average_frame_initializer(base=DEFAULT_KERNEL_INIT):
    """Random 3D kernel with the same 2D filter at every temporal index (filter inflation).

    Like the original, the random draw uses the fan-in of the whole 3D kernel, so the output
    scale is that of a default-initialised 3D convolution.
    """

    def init(key, shape, dtype=jnp.float32):
        if len(shape) != 5:
            raise ValueError(f"average_frame_initializer needs a 5-d kernel, got shape {shape}.")
        kernel = base(key, shape, dtype)
        return jnp.broadcast_to(kernel[:1], shape)

    return init


def _kernel_init(method: str | None):
    if method == "central_frame_initializer":
        return central_frame_initializer()
    if method == "average_frame_initializer":
        return average_frame_initializer()
    if method is None:
        return DEFAULT_KERNEL_INIT
    raise ValueError(
        f"model.temporal_encoding_config.kernel_init_method={method!r} is not one of "
        f"{KERNEL_INIT_METHODS}."
    )


def sampled_frame_indices(num_frames: int, n_sampled_frames: int) -> np.ndarray:
    """Indices of uniform frame sampling: `round(arange(T/(n+1), T, T/(n+1)))`, as the original."""
    step = num_frames / (n_sampled_frames + 1)
    idx = np.round(np.arange(step, num_frames, step)).astype(np.int32)[:n_sampled_frames]
    return np.minimum(idx, num_frames - 1)


def tokenize(
    x: jax.Array,
    *,
    hidden_size: int,
    patch_size: tuple[int, ...],
    method: str = "3d_conv",
    kernel_init_method: str | None = None,
    n_sampled_frames: int | None = None,
    dtype: Dtype = jnp.float32,
) -> jax.Array:
    """Maps `[B, T, H, W, 3]` videos to `[B, nt, nh, nw, D]` token grids.

    Call it inside a compact module: the convolution is created there as `embedding`, at the
    caller's level of the tree (the original's layout).

    Args:
      x: Videos.
      hidden_size: Token width D.
      patch_size: `(h, w, t)` as the original's `patches.size` (`t` ignored for frame sampling).
      method: '3d_conv' (tubelets) or 'temporal_sampling' (uniform frames, 2D patches).
      kernel_init_method: Random init of the tubelet kernel (see `KERNEL_INIT_METHODS`).
      n_sampled_frames: Frames kept by 'temporal_sampling'.
      dtype: Compute dtype.
    """
    fh, fw = patch_size[:2]
    if method == "3d_conv":
        ft = patch_size[2]
        return nn.Conv(
            hidden_size,
            (ft, fh, fw),
            strides=(ft, fh, fw),
            padding="VALID",
            kernel_init=_kernel_init(kernel_init_method),
            dtype=dtype,
            name="embedding",
        )(x)
    if method == "temporal_sampling":
        x = x[:, sampled_frame_indices(x.shape[1], n_sampled_frames)]
        b, t, h, w, c = x.shape
        # Frames stacked along the height axis, one 2D convolution: the original's layout,
        # exact because h is a multiple of the patch height (validated).
        y = nn.Conv(
            hidden_size,
            (fh, fw),
            strides=(fh, fw),
            padding="VALID",
            dtype=dtype,
            name="embedding",
        )(x.reshape(b, t * h, w, c))
        return y.reshape(b, t, h // fh, w // fw, hidden_size)
    raise ValueError(
        f"model.temporal_encoding_config.method={method!r} is not one of {TOKENIZER_METHODS}."
    )


class AddPositionEmbs(nn.Module):
    """Adds a learned `(1, N, D)` position embedding (BERT init, stddev 0.02).

    Inputs may have extra leading axes (`[B, T, N, D]`): the embedding broadcasts over them.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pe = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[-2:])
        return x + pe.astype(x.dtype)
