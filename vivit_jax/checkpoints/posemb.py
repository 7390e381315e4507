"""Positional-embedding surgery: CLS row, spatial resize, temporal tiling and interpolation.

A ViViT positional embedding is `(1, [1 +] nt*nh*nw, D)`: an optional CLS row, then the token
grid frame-major, as Scenic's ViViT flattens it. An image ViT's grid has no time axis.
Resizing uses `scipy.ndimage.zoom(order=1)` on each frame's `(nh, nw, D)` grid exactly as
Scenic does, so square grids come out bit-identical to the original; time is interpolated the same way on
`(nt, ...)`. Linear interpolation is separable, so space and time are adapted independently.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.ndimage

from vivit_jax.checkpoints.trees import CheckpointError

SIZE_CHANGES = ("tile", "resize", "resize_tile")


class Grid(NamedTuple):
    """Token grid of a positional embedding; `nt` is None for an image (no time axis)."""

    nt: int | None
    nh: int
    nw: int

    @property
    def size(self) -> int:
        return (self.nt or 1) * self.nh * self.nw

    def __str__(self) -> str:
        space = f"{self.nh}x{self.nw}"
        return space if self.nt is None else f"{self.nt}x{space}"


def square_grid(n: int, what: str) -> Grid:
    """The image grid of `n` tokens, assuming square frames."""
    g = math.isqrt(n)
    if g * g != n:
        raise CheckpointError(
            f"{what}: {n} tokens is not a square grid; give the grid explicitly "
            "(init_from.checkpoint_token_grid, or input_shape for the model)."
        )
    return Grid(None, g, g)


def adapt(
    src: np.ndarray,
    target_init: np.ndarray,
    *,
    src_cls: bool,
    target_cls: bool,
    src_grid: Grid,
    target_grid: Grid,
    size_change: str,
    name: str,
) -> tuple[np.ndarray, str]:
    """Fits a checkpoint's positional embedding to the model's.

    Args:
      src: `(1, [1 +] src_grid.size, D)` from the checkpoint.
      target_init: the model's freshly initialised embedding (its shape is the goal; its CLS row
        is used when only the model has a CLS token).
      src_cls, target_cls: whether each side has a CLS row.
      src_grid, target_grid: the token grids.
      size_change: 'tile' (repeat an image grid over time), 'resize' (interpolate the grid in
        space and, between videos, in time) or 'resize_tile' (whatever is needed).
      name: parameter path, for messages.

    Returns:
      (embedding, description of what was done).

    Raises:
      CheckpointError: shapes do not fit or `size_change` does not allow the needed change.
    """
    if size_change not in SIZE_CHANGES:
        raise CheckpointError(
            f"init_from.positional_embed_size_change={size_change!r}; expected one of "
            f"{SIZE_CHANGES}."
        )
    src = np.asarray(src)
    if src.ndim != 3 or src.shape[1] != int(src_cls) + src_grid.size:
        raise CheckpointError(
            f"{name}: checkpoint shape {src.shape} does not hold {'1 + ' * src_cls}"
            f"{src_grid} tokens."
        )
    if src.shape[-1] != target_init.shape[-1]:
        raise CheckpointError(
            f"{name}: hidden size differs: checkpoint {src.shape}, model {target_init.shape}."
        )
    notes = []
    grid = src[0, int(src_cls) :]
    grid = grid.reshape(src_grid.nt or 1, src_grid.nh, src_grid.nw, -1)
    if (src_grid.nh, src_grid.nw) != (target_grid.nh, target_grid.nw):
        if size_change == "tile":
            raise CheckpointError(
                f"{name}: the spatial grid changes {src_grid.nh}x{src_grid.nw} -> "
                f"{target_grid.nh}x{target_grid.nw} (checkpoint {src.shape}, model "
                f"{target_init.shape}) but positional_embed_size_change='tile'; use 'resize_tile'."
            )
        grid = np.stack([_zoom_space(frame, target_grid) for frame in grid])
        notes.append(f"resized {src_grid.nh}x{src_grid.nw}->{target_grid.nh}x{target_grid.nw}")
    if target_grid.nt is not None and src_grid.nt is None and target_grid.nt > 1:
        if size_change == "resize":
            raise CheckpointError(
                f"{name}: an image grid must be repeated over {target_grid.nt} frames (checkpoint "
                f"{src.shape}, model {target_init.shape}) but positional_embed_size_change="
                "'resize'; use 'tile' or 'resize_tile'."
            )
        grid = np.tile(grid, (target_grid.nt, 1, 1, 1))
        notes.append(f"tiled over {target_grid.nt} frames")
    elif target_grid.nt is not None and src_grid.nt is not None and src_grid.nt != target_grid.nt:
        if size_change == "tile":
            raise CheckpointError(
                f"{name}: the frame count changes {src_grid.nt} -> {target_grid.nt} (checkpoint "
                f"{src.shape}, model {target_init.shape}) but positional_embed_size_change="
                "'tile'; use 'resize' or 'resize_tile'."
            )
        grid = interpolate_1d(grid.reshape(src_grid.nt, -1), target_grid.nt)
        notes.append(f"interpolated {src_grid.nt}->{target_grid.nt} frames")
    elif target_grid.nt is None and src_grid.nt not in (None, 1):
        raise CheckpointError(
            f"{name}: checkpoint grid {src_grid} has a time axis; the model's {target_grid} has none."
        )
    tokens = grid.reshape(1, -1, src.shape[-1]).astype(src.dtype)
    if target_cls and src_cls:
        tokens = np.concatenate([src[:, :1], tokens], axis=1)
    elif target_cls:
        tokens = np.concatenate([np.asarray(target_init)[:, :1].astype(src.dtype), tokens], axis=1)
        notes.append("CLS position kept from initialisation (checkpoint has no CLS)")
    elif src_cls:
        notes.append("CLS position dropped")
    if tokens.shape != tuple(target_init.shape):
        raise CheckpointError(
            f"{name}: cannot fit checkpoint shape {src.shape} (grid {src_grid}) to model shape "
            f"{tuple(target_init.shape)} (grid {target_grid})."
        )
    return tokens, ", ".join(notes) or "copied"


def _zoom_space(frame: np.ndarray, target: Grid) -> np.ndarray:
    nh, nw, _ = frame.shape
    zoom = (target.nh / nh, target.nw / nw, 1)
    out = scipy.ndimage.zoom(frame, zoom, order=1)
    if out.shape[:2] != (target.nh, target.nw):  # Guard against rounding in zoom's output size.
        raise CheckpointError(f"Resizing {frame.shape} to {target} gave {out.shape}.")
    return out


def interpolate_1d(seq: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of `(n_src, ...)` rows to `n` rows (Scenic's temporal resize)."""
    flat = seq.reshape(seq.shape[0], -1)
    out = scipy.ndimage.zoom(flat, (n / seq.shape[0], 1), order=1)
    if out.shape[0] != n:
        raise CheckpointError(f"Interpolating {seq.shape[0]} -> {n} rows gave {out.shape[0]}.")
    return out.reshape(n, *seq.shape[1:])
