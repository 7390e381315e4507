"""What the video-file builders (Kinetics, SSv2) share: configs, features, decoding, reports.

Every example has the same features: `video` (JPEG frames, short side resized at build time),
`label` (ClassLabel with the real class names; -1 where a split has no labels), `video_id` and
`fps` (of the source file).

Dirty data never stops a build: rows whose file is missing, and files that cannot be decoded
into a frame, are skipped and counted; a summary naming them is logged at the end of each split
and kept in `builder.build_reports[split]` (the CLI also writes it to `build_report.json` in the
dataset directory). Videos are decoded by a pool of threads (PyAV and the JPEG encoder release
the GIL); TFDS writes the examples. A finished build is never redone; an interrupted one starts
over (TFDS writes a split atomically).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from vivit_jax.data import video_io

# Short sides with a named config 'short<N>'; 256 (the first, the default) as the original;
# 32 is for tests and quick experiments.
SHORT_SIDES = (256, 128, 160, 224, 288, 320, 32)


class LocalCodePath:
    """Mixin: `code_path` without TFDS's lookup, which needs the undeclared `importlib_resources`
    package on Python >= 3.9 (tensorflow-datasets 4.9.x declares it only for < 3.9)."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(sys.modules[cls.__module__].__file__)


@dataclasses.dataclass(eq=False)
class VideoBuilderConfig(tfds.core.BuilderConfig):
    """Attributes:
    short_side: frames are resized so that min(H, W) is this; None keeps the source size.
    jpeg_quality: quality of the stored JPEG frames.
    """

    short_side: int | None = 256
    jpeg_quality: int = 90


def video_configs() -> list[VideoBuilderConfig]:
    """'short256' (the default, as the original), other 'short<N>'; 'original' = no resize."""
    configs = [
        VideoBuilderConfig(
            name=f"short{s}", description=f"Frames resized to short side {s}.", short_side=s
        )
        for s in SHORT_SIDES
    ]
    configs.append(
        VideoBuilderConfig(name="original", description="Frames at source size.", short_side=None)
    )
    return configs


def video_features(class_names: list[str] | None = None) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=class_names)
            if class_names
            else tfds.features.ClassLabel(),
            "video_id": tfds.features.Text(),
            "fps": tfds.features.Scalar(dtype=np.float32),
        }
    )


@dataclasses.dataclass
class Row:
    """One annotation row: `key` (video id), `path` (None when no file was found), `label`,
    and `problem` (a reason to skip it found while reading the annotations)."""

    key: str
    path: str | None
    label: int
    expected_name: str = ""
    problem: str | None = None


@dataclasses.dataclass
class BuildReport:
    """What happened to every row of one split."""

    split: str
    rows: int = 0
    written: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)
    undecodable: dict[str, str] = dataclasses.field(default_factory=dict)
    partial: dict[str, str] = dataclasses.field(default_factory=dict)
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self, max_names: int = 20) -> str:
        def names(items):
            items = list(items)
            shown = ", ".join(items[:max_names])
            return shown + (
                f", ... ({len(items) - max_names} more)" if len(items) > max_names else ""
            )

        lines = [f"split {self.split}: wrote {self.written} of {self.rows} annotated videos."]
        if self.missing:
            lines.append(f"  skipped {len(self.missing)} missing files: {names(self.missing)}")
        if self.undecodable:
            bad = [f"{k} ({v})" for k, v in self.undecodable.items()]
            lines.append(f"  skipped {len(bad)} undecodable files: {names(bad)}")
        if self.invalid:
            bad = [f"{k} ({v})" for k, v in self.invalid.items()]
            lines.append(f"  skipped {len(bad)} rows with bad annotations: {names(bad)}")
        if self.partial:
            part = [f"{k} ({v})" for k, v in self.partial.items()]
            lines.append(f"  kept the frames before a decode error in {len(part)}: {names(part)}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def default_num_workers() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def ordered_parallel_map(fn: Callable, items: Iterable, num_workers: int) -> Iterator:
    """map(fn, items) on `num_workers` threads, in order, with a bounded number in flight."""
    if num_workers <= 1:
        yield from map(fn, items)
        return
    window = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * num_workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


class VideoFileBuilderMixin(LocalCodePath):
    """`_generate_examples` shared by the builders that decode video files from a manual dir."""

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        self.num_workers = num_workers or default_num_workers()
        self.build_reports: dict[str, BuildReport] = {}
        super().__init__(**kwargs)

    def _decode_row(self, row: Row):
        if row.problem is not None:
            return row, None, "invalid"
        if row.path is None:
            return row, None, "missing"
        try:
            video = video_io.decode_video(
                row.path, self.builder_config.short_side, self.builder_config.jpeg_quality
            )
        except video_io.VideoDecodeError as e:
            return row, None, str(e)
        except Exception as e:  # noqa: BLE001 - nothing may stop the build.
            return row, None, f"{type(e).__name__}: {e}"
        return row, video, None

    def _generate_from_rows(self, split: str, rows: list[Row]):
        report = BuildReport(split=split, rows=len(rows))
        self.build_reports[split] = report
        for row, video, problem in ordered_parallel_map(self._decode_row, rows, self.num_workers):
            name = os.path.basename(row.path) if row.path else row.expected_name or row.key
            if problem == "missing":
                report.missing.append(name)
                continue
            if problem == "invalid":
                report.invalid[name] = row.problem
                continue
            if problem is not None:
                report.undecodable[name] = problem
                continue
            if video.error:
                report.partial[name] = f"{len(video.frames)} frames kept; {video.error}"
            report.written += 1
            yield (
                row.key,
                {
                    "video": video.frames,
                    "label": row.label,
                    "video_id": row.key,
                    "fps": video.fps,
                },
            )
        logging.info("%s %s", self.name, report.summary())
        print(f"[{self.name}] {report.summary()}", flush=True)
