"""Small real videos in the codecs the builders meet, and readers of what a build wrote.

`write_clip` writes h264 (.mp4, .mov), vp9 (.webm, .mkv), mpeg4 or mjpeg (.avi); `index_clip`
frames carry their own index in their colour, so that a test can tell which frames of a video an
example holds.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction

import av
import numpy as np
import tensorflow as tf

from tests.data.conftest import clip_frames
from vivit_jax.data.video_io import write_video

CODECS = {".mp4": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".mkv": "libvpx-vp9"}


def write_clip(
    path, num_frames: int = 4, fps=10, size=(48, 64), seed: int = 0, codec: str | None = None
) -> str:
    """Writes a moving-square clip; the codec from the extension (.avi: mpeg4) unless given."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frames = clip_frames(num_frames, size[0], size[1], seed)
    ext = os.path.splitext(path)[1].lower()
    codec = codec or CODECS.get(ext, "mpeg4")
    if codec in ("libx264", "libvpx-vp9"):
        write_video(path, frames, fps=fps, codec=codec)
        return path
    with av.open(path, "w") as out:  # The .avi codecs, which write_video does not set up.
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


BASE, STEP, PER = 8, 8, 30  # k < PER * PER


def index_clip(path, num_frames: int, fps: Fraction, size=(48, 64), gop: int = 12) -> str:
    """An h264 clip whose frame k is gray: BASE + STEP * (k % PER) on its left half, BASE + STEP *
    (k // PER) on its right half (gray survives YUV 4:2:0), a key frame every `gop` frames."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"g": str(gop), "sc_threshold": "0"}  # no extra key frames
        for k in range(num_frames):
            frame = np.empty((*size, 3), np.uint8)
            frame[:, : size[1] // 2] = BASE + STEP * (k % PER)
            frame[:, size[1] // 2 :] = BASE + STEP * (k // PER)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def frame_index(jpeg: bytes) -> int:
    """The k of an `index_clip` frame, read back from its JPEG."""
    image = tf.io.decode_jpeg(jpeg).numpy().astype(float)
    quarter = image.shape[1] // 4  # Away from the edge between the halves, which blurs.
    low, high = image[:, :quarter].mean(), image[:, -quarter:].mean()
    return round((low - BASE) / STEP) + PER * round((high - BASE) / STEP)


def raw_examples(builder, split: str, key: str = "video_id") -> dict:
    """{example[key]: tf.train.Example features} of a built split, read from its files."""
    files = [os.fspath(p) for p in builder.info.splits[split].filepaths]
    out = {}
    for raw in tf.data.TFRecordDataset(files):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        out[feature[key].bytes_list.value[0].decode()] = feature
    return out


def saved_report(builder) -> dict:
    with open(os.path.join(builder.data_dir, "build_report.json"), encoding="utf-8") as f:
        return json.load(f)
