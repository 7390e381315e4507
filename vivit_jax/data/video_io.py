"""Reading and writing video files with PyAV (FFmpeg libraries in its wheel; no ffmpeg binary).

Used by the dataset builders (decode → resize short side → JPEG per frame) and by tests and
examples that need real encoded videos.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

# JPEG stores each side in 16 bits (ITU T.81, the frame header's X and Y).
JPEG_MAX_SIDE = 65535


# The video files the builders and `predict` look for (in any letter case).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


class VideoDecodeError(Exception):
    """The file could not be decoded into at least one frame, or its frames cannot be stored."""


@dataclass
class DecodedVideo:
    """Attributes:
    frames: JPEG bytes, one per frame, short side resized.
    fps: frames per second from the container (0.0 if unknown).
    source_size: (height, width) before resizing.
    error: a decode error after some frames (the frames before it are kept), or None.
    """

    frames: list[bytes]
    fps: float
    source_size: tuple[int, int]
    error: str | None = None


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 `[H, W, 3]` → JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def short_side_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) after scaling so that min(height, width) == short_side (None: unchanged)."""
    if short_side is None or min(height, width) == short_side:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def check_jpeg_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """The (height, width) frames of `height` x `width` are stored at, if JPEG can hold them.

    Raises:
      VideoDecodeError: a side would exceed `JPEG_MAX_SIDE`; the message says the size, the
        limit, and the largest short side that fits.
    """
    out_h, out_w = short_side_size(height, width, short_side)
    if max(out_h, out_w) <= JPEG_MAX_SIDE:
        return out_h, out_w
    fits = JPEG_MAX_SIDE * min(height, width) // max(height, width)
    resized = f"resized to short side {short_side} " if short_side else ""
    remedy = (
        f"build with a short side of at most {fits} (--config=short<N>) or --config=original"
        if fits >= 1
        else "no short side fits: the video cannot be stored as JPEG frames"
    )
    raise VideoDecodeError(
        f"frames of {height}x{width} {resized}would be {out_h}x{out_w}, beyond JPEG's limit "
        f"of {JPEG_MAX_SIDE} pixels per side; {remedy}"
    )


def decode_video(
    path: str, short_side: int | None = 256, jpeg_quality: int = 90, max_frames: int | None = None
) -> DecodedVideo:
    """Decodes all frames of `path`, resizes them and encodes each as JPEG.

    Frames are streamed (decoded, resized, encoded one at a time), so memory holds only JPEGs.

    Raises:
      VideoDecodeError: the file cannot be opened, has no video stream, or yields no frame, or
        its resized frames would be too large for JPEG (checked before the first is resized).
    """
    try:
        container = av.open(path)
    except Exception as e:  # noqa: BLE001 - PyAV raises many FFmpeg error types.
        raise VideoDecodeError(f"cannot open ({type(e).__name__}: {e})") from None
    frames: list[bytes] = []
    error = None
    fps = 0.0
    size = (0, 0)
    try:
        if not container.streams.video:
            raise VideoDecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        try:
            for frame in container.decode(stream):
                if not size[0]:
                    size = (frame.height, frame.width)
                    out_h, out_w = check_jpeg_size(frame.height, frame.width, short_side)
                rgb = frame.to_ndarray(
                    width=out_w, height=out_h, format="rgb24", interpolation="BILINEAR"
                )
                frames.append(encode_jpeg(rgb, jpeg_quality))
                if max_frames and len(frames) >= max_frames:
                    break
        except VideoDecodeError:
            raise
        except Exception as e:  # noqa: BLE001
            error = f"{type(e).__name__}: {e}"
    finally:
        container.close()
    if not frames:
        raise VideoDecodeError(f"no frames decoded{f' ({error})' if error else ''}")
    return DecodedVideo(frames=frames, fps=fps, source_size=size, error=error)


def write_video(path: str, frames: np.ndarray, fps: int = 25, codec: str | None = None) -> None:
    """Writes uint8 `[T, H, W, 3]` frames; codec from the extension (.mp4 h264, .webm vp9).

    H and W must be even for the yuv420p codecs.
    """
    if codec is None:
        codec = "libvpx-vp9" if path.endswith(".webm") else "libx264"
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
