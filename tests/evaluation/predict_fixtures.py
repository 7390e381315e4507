"""Real inputs for `vivit_jax.predict`: a tiny checkpoint, good videos and bad ones."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np

from tests.evaluation.conftest import REPO, load_config

DEMO_CONFIG = os.path.join(REPO, "configs", "demo.py") + ":tiny"
NUM_CLASSES = 8


def demo_checkpoint(directory, num_classes: int = NUM_CLASSES):
    """Random parameters (head included) of configs/demo.py:tiny's model, saved as an orbax
    workdir under `directory`; returns (workdir, model, params)."""
    from vivit_jax import config_lib
    from vivit_jax.checkpoints import save_params_orbax
    from vivit_jax.models import create_model

    config = config_lib.complete_config(load_config("configs/demo.py", "tiny"))
    model = create_model(config.model, num_classes)
    params = jax.device_get(
        model.init(jax.random.key(0), np.zeros((1, 8, 16, 16, 3), np.float32), train=False)
    )["params"]
    head = params["output_projection"]
    head["kernel"] = np.random.default_rng(0).normal(0, 1, head["kernel"].shape).astype(np.float32)
    workdir = os.path.join(os.fspath(directory), "work")
    save_params_orbax(os.path.join(workdir, "checkpoints"), params, 3)
    return workdir, model, params


def video_file(path, num_frames: int = 20, seed: int = 1) -> str:
    """A real video of random frames: VP9 for .webm, else h264 in the container the name says."""
    from vivit_jax.data.video_io import write_video

    frames = np.random.default_rng(seed).integers(0, 255, (num_frames, 24, 32, 3), dtype=np.uint8)
    write_video(os.fspath(path), frames, fps=10)
    return os.fspath(path)


def audio_only(path) -> str:
    """A valid AAC container (.m4a/.mp4) with one audio stream and no video stream."""
    import av

    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return os.fspath(path)


def random_bytes(path, size: int = 3000) -> str:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(2).bytes(size))
    return os.fspath(path)


def truncated_copy(source, path) -> str:
    """The first half of `source`'s bytes (an mp4 cut before its index)."""
    with open(source, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return os.fspath(path)


def video_folder(root, good) -> tuple[str, list[str], str]:
    """A directory of videos in sub-folders (upper-case extension included), a bad .mkv, a text
    file and hidden videos that must be skipped; returns (folder, its videos sorted, bad one)."""
    root = os.fspath(root)
    for sub in ("sub", ".hidden_dir"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    videos = [os.path.join(root, "b.MP4"), os.path.join(root, "sub", "a.mov")]
    for path in videos:
        shutil.copy(good, path)
    shutil.copy(good, os.path.join(root, ".hidden.mp4"))
    shutil.copy(good, os.path.join(root, ".hidden_dir", "c.mp4"))
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not a video\n")
    bad = random_bytes(os.path.join(root, "sub", "z.mkv"))
    return root, sorted([*videos, bad]), bad
