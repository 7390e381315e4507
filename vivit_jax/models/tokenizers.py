"""Video tokenisers (tubelets, uniform frame sampling) and learned position embeddings.

The tokeniser's convolution is named `embedding` and the position embedding
`posembed_input/pos_embedding`, as in Scenic (a checkpoint contract).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.models.attention import Dtype

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
        return PatchEmbedding(
            hidden_size,
            (ft, fh, fw),
            kernel_init=_kernel_init(kernel_init_method),
            dtype=dtype,
            name="embedding",
        )(x)
    if method == "temporal_sampling":
        x = x[:, sampled_frame_indices(x.shape[1], n_sampled_frames)]
        # Each sampled frame embedded with the same 2D kernel (a ViT patch kernel).
        return PatchEmbedding(hidden_size, (fh, fw), dtype=dtype, name="embedding")(x)
    raise ValueError(
        f"model.temporal_encoding_config.method={method!r} is not one of {TOKENIZER_METHODS}."
    )


class PatchEmbedding(nn.Module):
    """Non-overlapping patch (or tubelet) embedding with the parameters of a strided `nn.Conv`.

    `kernel` has the convolution's shape (`(t, h, w, C, D)` or `(h, w, C, D)`) and `bias` `(D,)`,
    so Scenic checkpoints load unchanged; the computation is a reshape and one matrix multiply,
    which is what a stride-equals-kernel, VALID convolution is, and much faster than XLA:CPU's
    3D convolution and its gradient.

    Attributes:
      features: Output width D.
      patch: Patch size over the trailing spatial (and temporal) axes before channels.
      kernel_init: Kernel initialiser (receives the convolution-shaped kernel shape).
      dtype: Compute dtype.
    """

    features: int
    patch: tuple[int, ...]
    kernel_init: Callable = DEFAULT_KERNEL_INIT
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.patch)
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, tuple(self.patch) + (c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        lead, dims = x.shape[: -n - 1], x.shape[-n - 1 : -1]
        grid = tuple(d // p for d, p in zip(dims, self.patch))
        # [..., g0, p0, g1, p1, ..., C] -> [..., g0, g1, ..., p0, p1, ..., C]
        split = lead + tuple(v for g, p in zip(grid, self.patch) for v in (g, p)) + (c,)
        x = x.reshape(split)
        k = len(lead)
        order = (
            tuple(range(k))
            + tuple(k + 2 * i for i in range(n))
            + tuple(k + 2 * i + 1 for i in range(n))
            + (k + 2 * n,)
        )
        x = x.transpose(order).reshape(lead + grid + (-1,))
        kernel = kernel.reshape(-1, self.features)
        x, kernel, bias = (t.astype(self.dtype) for t in (x, kernel, bias))
        return x @ kernel + bias


class AddPositionEmbs(nn.Module):
    """Adds a learned `(1, N, D)` position embedding (BERT init, stddev 0.02).

    Inputs may have extra leading axes (`[B, T, N, D]`): the embedding broadcasts over them.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pe = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + x.shape[-2:])
        return x + pe.astype(x.dtype)
