"""What the video-file builders (Kinetics, SSv2, Moments in Time, EPIC-KITCHENS-100, video
folders) share: configs, features, decoding, reports.

Every example has `video` (JPEG frames, short side resized at build time) and `fps` (of the
source file); the single-label builders also `label` (ClassLabel with the real class names; -1
in a split that has no labels) and `video_id` (`video_features`). EPIC-KITCHENS-100 and the
multi-label video folders have their own labels (see their modules).

Dirty data never stops a build. Annotation files are read as UTF-8 with or without a byte-order
mark. Every row that cannot be used is skipped and counted with its reason: a row whose file is
missing; a file that cannot be decoded into a frame, or whose frames would exceed JPEG's 65,535
pixels per side; a bad annotation row (a value that is not a number, an empty id, an empty label
in a labelled split, a label that is not a class), named by file and line (CSV) or index (JSON)
and column; a repeated row. Whitespace runs inside a class name (a quoted line break, a tab) are
made one space in every split, and the names so changed are reported. A split whose rows carry
no label at all (Kinetics' test.csv) is kept unlabelled (-1) and said to be so; train must have
labels. A split none of whose rows can be used is left out of the dataset, and its report says
so (TFDS cannot write an empty split; for train it is an error).
Files in a video folder that are not part of its layout are reported as ignored, and segments
cut at their video's end as clipped.

The summary is logged at the end of each split and kept in `builder.build_reports[split]` (the
CLI also writes it to `build_report.json` in the dataset directory). Videos are decoded by a pool
of threads (PyAV and the JPEG encoder release the GIL); TFDS writes the examples. A finished
build is never redone; an interrupted one starts over, and its partial folder is removed
(`build_dir`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from vivit_jax.data import video_io
from vivit_jax.data.builders.build_dir import CleanBuildMixin

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


def read_text(path: str) -> str:
    """The text of an annotation file: UTF-8, with or without a byte-order mark (spreadsheets'
    "CSV UTF-8" writes one). Bytes that are not UTF-8 become U+FFFD; `text_problem` finds them,
    so that only the rows holding them are skipped."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        return f.read()


def text_problem(value: str, field: str) -> str | None:
    """Why `value` (of `field`, e.g. 'column label') is unusable: bytes that were not UTF-8."""
    if "\ufffd" in value:
        return f"{field}: bytes that are not UTF-8 in {value!r}"
    return None


def read_csv(
    path: str, required: tuple[str, ...]
) -> tuple[list[str], list[tuple[str, dict | None, str | None]]]:
    """A CSV with a header row (`read_text`): its columns and, per non-blank row after the header,
    (where, record, problem).

    `where` is '<file> line <n>' (the header being line 1, a quoted line break counted); `record`
    maps each column to its value (a short row lacks the last columns), or is None when the row
    is not CSV (`problem` says why; otherwise None). Header names are stripped.

    Raises:
      ValueError: the file is empty or its header lacks one of `required`.
    """
    file = os.path.basename(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    columns, rows = None, []
    while True:
        where = f"{file} line {reader.line_num + 1}"  # The row starts after the previous one.
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows.append((where, None, f"not CSV ({e})"))
            continue
        if not any(v.strip() for v in values):
            continue
        if columns is None:
            columns = [v.strip() for v in values]
            for needed in required:
                if needed not in columns:
                    raise ValueError(f"{path}: no '{needed}' column (columns: {columns}).")
            continue
        rows.append((where, dict(zip(columns, values)), None))
    if columns is None:
        raise ValueError(f"{path}: empty file (no header row).")
    return columns, rows


def clean_label(label: str) -> str:
    """A class name without line breaks: whitespace runs (newline, tab, ...) become one space.

    TFDS stores ClassLabel names one per line, so a name with a line break would read back as two.
    """
    return " ".join(label.split())


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
    `problem` (a reason to skip it found while reading the annotations), `where` (the file and
    line or index the row came from) and `report_name` (how the report names the row's file;
    default: the file's name, else `expected_name`, else `key`)."""

    key: str
    path: str | None
    label: int
    expected_name: str = ""
    problem: str | None = None
    where: str = ""
    report_name: str = ""


@dataclasses.dataclass
class BuildReport:
    """What happened to every row of one split.

    `invalid` maps a row (file and line or index) to why its annotation is unusable; `duplicates`
    lists repeated rows (the first is used); `normalised` maps a label as written to the class
    name it was read as; `ignored` maps a file found in a video folder but not used (not part of
    the dataset's layout) to why; `clipped` maps a segment that runs past its video's end, and was
    kept up to that end, to how.
    """

    split: str
    rows: int = 0
    written: int = 0
    built: bool = True
    labelled: bool = True
    missing: list[str] = dataclasses.field(default_factory=list)
    undecodable: dict[str, str] = dataclasses.field(default_factory=dict)
    partial: dict[str, str] = dataclasses.field(default_factory=dict)
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)
    duplicates: list[str] = dataclasses.field(default_factory=list)
    normalised: dict[str, str] = dataclasses.field(default_factory=dict)
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)
    clipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self, max_names: int = 20) -> str:
        def names(items):
            items = list(items)
            shown = ", ".join(items[:max_names])
            return shown + (
                f", ... ({len(items) - max_names} more)" if len(items) > max_names else ""
            )

        def pairs(mapping):
            return names(f"{k} ({v})" for k, v in mapping.items())

        lines = [f"split {self.split}: wrote {self.written} of {self.rows} annotated videos."]
        if not self.built:
            lines = [f"split {self.split}: not built: none of its {self.rows} rows can be used."]
        if not self.labelled:
            lines[0] += " The split is unlabelled (no row has a label): label -1."
        if self.missing:
            lines.append(f"  skipped {len(self.missing)} missing files: {names(self.missing)}")
        if self.undecodable:
            lines.append(
                f"  skipped {len(self.undecodable)} undecodable files: {pairs(self.undecodable)}"
            )
        if self.invalid:
            lines.append(
                f"  skipped {len(self.invalid)} rows with bad annotations: {pairs(self.invalid)}"
            )
        if self.duplicates:
            lines.append(
                f"  ignored {len(self.duplicates)} repeated rows: {names(self.duplicates)}"
            )
        if self.partial:
            lines.append(
                f"  kept the frames before a decode error in {len(self.partial)}: "
                f"{pairs(self.partial)}"
            )
        if self.normalised:
            changed = (f"{k!r} -> {v!r}" for k, v in self.normalised.items())
            lines.append(
                f"  made whitespace in {len(self.normalised)} labels one space: {names(changed)}"
            )
        if self.clipped:
            lines.append(
                f"  clipped {len(self.clipped)} segments at their video's end: "
                f"{pairs(self.clipped)}"
            )
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} files: {pairs(self.ignored)}")
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
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 2 * num_workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:  # Interrupted (Ctrl-C, an error, the consumer stopped): drop what has not begun.
            for future in window:
                future.cancel()


class VideoFileBuilderMixin(CleanBuildMixin, LocalCodePath):
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

    def _split_generator(self, report: BuildReport, rows: list[Row]):
        """The examples of one split, or None when no row can be used.

        TFDS refuses a split without examples after generating all the others, so such a split
        is left out now, and its report says why (train cannot be left out: an error).
        """
        if any(row.problem is None and row.path is not None for row in rows):
            return self._generate_examples(report=report, rows=rows)
        report.rows, report.built = len(rows), False
        self.build_reports[report.split] = report
        for row in rows:
            record(report, row, *self._decode_row(row)[1:])
        if report.split == "train":
            raise ValueError(f"No train example can be built.\n{report.summary()}")
        logging.warning("%s %s", self.name, report.summary())
        print(f"[{self.name}] {report.summary()}", flush=True)
        return None

    def _example(self, row: Row, video: video_io.DecodedVideo) -> dict:
        """The features of one decoded row (a builder with other features overrides this)."""
        return {"video": video.frames, "label": row.label, "video_id": row.key, "fps": video.fps}

    def _generate_from_rows(self, report: BuildReport, rows: list[Row]):
        """Yields the examples of `rows`; fills `report` (rows already holds the skipped ones)."""
        report.rows = len(rows)
        self.build_reports[report.split] = report
        for row, video, problem in ordered_parallel_map(self._decode_row, rows, self.num_workers):
            if not record(report, row, video, problem):
                continue
            yield row.key, self._example(row, video)
        logging.info("%s %s", self.name, report.summary())
        print(f"[{self.name}] {report.summary()}", flush=True)


def record(report: BuildReport, row: Row, video, problem: str | None) -> bool:
    """Counts one decoded (or skipped) row in `report`; True if it is to be written."""
    name = row.report_name or (
        os.path.basename(row.path) if row.path else row.expected_name or row.key
    )
    if problem == "missing":
        report.missing.append(name)
    elif problem == "invalid":
        report.invalid[row.where or name] = row.problem
    elif problem is not None:
        report.undecodable[name] = problem
    else:
        if video.error:
            report.partial[name] = f"{len(video.frames)} frames kept; {video.error}"
        report.written += 1
        return True
    return False
