"""TFDS builder `moving_shapes`: a built-in video dataset whose class is only in the motion.

Each video shows one shape (square, disk or diamond; random size, colour, position, background)
moving in a straight line at constant speed on a torus (it wraps at the borders), with fresh
pixel noise in every frame. The class is the motion: 4 directions × 2 speeds (1 or 3 px/frame)
= 8 classes. Shape, colour and position are independent of the class, so a single frame carries
no information about it (chance = 12.5%), while two frames suffice. Generated deterministically
from the config's seed; no download.

Configs:
  default: 3200 / 400 / 400 videos (train / validation / test), 16 frames of 32×32. The demo
    dataset: builds in well under a minute on 2 cores.
  tiny: 40 / 20 / 12 videos, 8 frames of 16×16, for tests (seconds).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vivit_jax.data.builders.build_dir import CleanBuildMixin
from vivit_jax.data.builders.common import LocalCodePath, video_features
from vivit_jax.data.video_io import encode_jpeg

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
SPEEDS = {"slow": 1, "fast": 3}
CLASS_NAMES = [f"{d}_{s}" for d in DIRECTIONS for s in SPEEDS]
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class MovingShapesConfig(tfds.core.BuilderConfig):
    """Attributes:
    num_train, num_validation, num_test: videos per split.
    num_frames: frames per video.
    size: frame height and width in pixels.
    seed: everything is a function of it.
    noise: standard deviation of the per-frame pixel noise (0-255 scale).
    """

    num_train: int = 3200
    num_validation: int = 400
    num_test: int = 400
    num_frames: int = 16
    size: int = 32
    seed: int = 0
    noise: float = 6.0


def _shape_mask(kind: int, size: int, cy: int, cx: int, radius: int) -> np.ndarray:
    """Binary mask of a shape centred at (cy, cx) on a size×size torus."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    if kind == 0:
        local = np.ones_like(yy, bool)  # square
    elif kind == 1:
        local = yy**2 + xx**2 <= radius**2  # disk
    else:
        local = np.abs(yy) + np.abs(xx) <= radius  # diamond
    mask = np.zeros((size, size), bool)
    ys = (yy + cy) % size
    xs = (xx + cx) % size
    mask[ys[local], xs[local]] = True
    return mask


def render(label: int, rng: np.random.Generator, num_frames: int, size: int, noise: float):
    """uint8 frames `[num_frames, size, size, 3]` of one video of class `label`."""
    direction, speed = CLASS_NAMES[label].split("_")
    dy, dx = DIRECTIONS[direction]
    step = SPEEDS[speed]
    radius = int(rng.integers(max(2, size // 10), max(3, size // 5) + 1))
    mask = _shape_mask(
        int(rng.integers(3)), size, int(rng.integers(size)), int(rng.integers(size)), radius
    )
    background = rng.uniform(0, 100, 3)
    colour = rng.uniform(150, 255, 3)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        m = np.roll(mask, (dy * step * t, dx * step * t), axis=(0, 1))[..., None]
        frame = np.where(m, colour, background) + rng.normal(0, noise, (size, size, 3))
        frames[t] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    return frames


class MovingShapes(CleanBuildMixin, LocalCodePath, tfds.core.GeneratorBasedBuilder):
    """Moving shapes: 8 motion classes (4 directions × 2 speeds); no download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        MovingShapesConfig(name="default", description="Demo size: 3200/400/400 videos, 16×32×32."),
        MovingShapesConfig(
            name="tiny",
            description="Test size: 40/20/12 videos, 8×16×16.",
            num_train=40,
            num_validation=20,
            num_test=12,
            num_frames=8,
            size=16,
            seed=1,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=video_features(CLASS_NAMES),
            supervised_keys=("video", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        cfg = self.builder_config
        counts = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
        return {
            split: self._generate_examples(split=split, split_id=i, count=counts[split])
            for i, split in enumerate(SPLITS)
            if counts[split] > 0
        }

    def _generate_examples(self, split, split_id, count):
        cfg = self.builder_config
        for i in range(count):
            rng = np.random.default_rng([cfg.seed, split_id, i])
            label = i % len(CLASS_NAMES)
            frames = render(label, rng, cfg.num_frames, cfg.size, cfg.noise)
            key = f"{split}_{i:06d}"
            yield (
                key,
                {
                    "video": [encode_jpeg(f, quality=95) for f in frames],
                    "label": label,
                    "video_id": key,
                    "fps": 25.0,
                },
            )
