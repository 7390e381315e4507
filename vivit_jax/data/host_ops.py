"""What the host does to a clip: sample frame indices, decode JPEGs, resize, crop, flip → uint8.

Frame sampling follows DMVR (`dmvr/processors.py`) exactly and is plain numpy, so the input
pipeline reads only the encoded frames it will use. The geometry of the original's graph —
resize the short side to `min_resize` (DMVR's `resize_smallest`), scale jitter, upscale if
smaller than the crop, then a random or central crop — is computed as one box in the stored
frame, and only that box is resized to the crop size (bilinear). That is the same picture for
a fraction of the work: the rest of a resized frame would be cropped away. Every random decision
is drawn once per clip from `rng` (keyed on the stream position), so all frames of a clip get
the same crop and flip, and every clip is a pure function of (seed, position).

Per-pixel float work (normalisation, colour jitter, RandAugment) runs on the device:
`vivit_jax.data.augment`.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

try:  # libjpeg-turbo without Pillow's overhead: the fastest decoder measured here.
    import simplejpeg
except ImportError:
    simplejpeg = None

# ---------------------------------------------------------------------------------------------
# Frame sampling. Indices wrap around (modulo the video length) when a clip needs more frames
# than the video has, as DMVR's `sample_or_pad_sequence_indices(repeat_sequence=True)`.


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
# Decoding.


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → uint8 `[H, W, 3]` RGB."""
    if simplejpeg is not None:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def complete_jpeg(data: bytes) -> bool:
    """Start-of-image marker first and end-of-image marker at the end (allowing a little
    trailing padding): catches empty, truncated and overwritten frames without decoding."""
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" in data[-16:]


# ---------------------------------------------------------------------------------------------
# Geometry: a box in the stored frame, resized to the crop.


def smallest_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(h, w) after DMVR's `resize_smallest(short)`."""
    return max(short, (h * short) // w), max(short, (w * short) // h)


def _cut(frame: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The `box` (x0, y0, x1, y1, in source pixels) of `frame`, as a `size`×`size` image."""
    x0, y0, x1, y1 = box
    if x1 - x0 == size and y1 - y0 == size and float(x0).is_integer() and float(y0).is_integer():
        x0, y0 = int(x0), int(y0)
        return frame[y0 : y0 + size, x0 : x0 + size]
    image = Image.fromarray(frame)
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box))


def cut_frames(frames, gather, box, size: int, flip: bool = False) -> np.ndarray:
    """Decodes `frames` (JPEG bytes), cuts `box` from each and returns them in the order
    `gather`: uint8 `[len(gather), size, size, 3]`, flipped left-right with `flip`."""
    cut = np.stack([_cut(decode_jpeg(f), box, size) for f in frames])[np.asarray(gather)]
    return cut[:, :, ::-1] if flip else cut


def train_box(h: int, w: int, cfg, rng) -> tuple[tuple[float, ...], bool]:
    """The random crop of a training clip as a box in an `h`×`w` stored frame, and the flip.

    The original's order: resize the short side to `min_resize`, scale jitter (with probability
    `prob_scale_jitter`, H and W by independent factors in [min, max)), upscale to the crop if
    smaller, a random `crop_size` window.
    """
    aug = cfg.augmentation_params
    c = cfg.crop_size
    out_h, out_w = smallest_size(h, w, cfg.min_resize)
    h_scale, w_scale, coin = rng.uniform(aug.scale_min_factor, aug.scale_max_factor, 2).tolist() + [
        rng.uniform()
    ]
    if aug.do_jitter_scale and coin < aug.prob_scale_jitter:
        out_h, out_w = int(h_scale * out_h), int(w_scale * out_w)
    if min(out_h, out_w) < c:
        out_h, out_w = smallest_size(out_h, out_w, c)
    y = int(rng.integers(0, out_h - c + 1))
    x = int(rng.integers(0, out_w - c + 1))
    flip = bool(rng.uniform() < 0.5)
    sy, sx = h / out_h, w / out_w
    return (x * sx, y * sy, (x + c) * sx, (y + c) * sy), flip


def crop_boxes(h: int, w: int, short: int, size: int, crops: int) -> list[tuple[float, ...]]:
    """The evaluation crops as boxes in an `h`×`w` stored frame, after resizing its short side
    to `short`: the centre (`crops=1`, DMVR's `resize_with_crop_or_pad`), or left/centre/right
    (top/middle/bottom for portrait frames; Scenic's offsets) for `crops=3`."""
    out_h, out_w = smallest_size(h, w, short)
    sy, sx = h / out_h, w / out_w
    if crops == 1:
        offsets = [((out_h - size) // 2, (out_w - size) // 2)]
    else:
        cy, cx = math.ceil((out_h - size) / 2), math.ceil((out_w - size) / 2)
        if out_h > out_w:  # portrait: top, middle, bottom
            offsets = [(0, cx), (cy, cx), (out_h - size, cx)]
        else:
            offsets = [(cy, 0), (cy, cx), (cy, out_w - size)]
    return [(x * sx, y * sy, (x + size) * sx, (y + size) * sy) for y, x in offsets]


def test_views(frames, gather, h: int, w: int, cfg, num_clips: int, three_crops: bool):
    """`[V, T, c, c, 3]` uint8 views, ordered crop-major: view = crop * num_clips + clip (as
    Scenic). `frames`: the unique frames' JPEGs, `gather`: `[num_clips * T]` into them."""
    t, c = cfg.num_frames, cfg.crop_size
    decoded = [decode_jpeg(f) for f in frames]
    views = []
    for box in crop_boxes(h, w, cfg.min_resize, c, 3 if three_crops else 1):
        cut = np.stack([_cut(d, box, c) for d in decoded])[np.asarray(gather)]
        views.append(cut.reshape(num_clips, t, c, c, 3))
    return np.concatenate(views)
