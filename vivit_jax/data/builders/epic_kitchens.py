"""TFDS builder `epic_kitchens_100`: EPIC-KITCHENS-100 action segments (manual download).

One example per action segment (narration_id) of `EPIC_100_train.csv`, `EPIC_100_validation.csv`
and, if present, `EPIC_100_test_timestamps.csv` (unlabelled: -1). A segment's frames are those
whose presentation time t (from the stream's start) has `start_timestamp <= t < stop_timestamp`:
never `start_frame`/`stop_frame`, which count frames at a nominal 60 (or 50) fps and so point
elsewhere in the 29.97 fps videos. Features: `video` (JPEG frames), `verb_label` (ClassLabel of
`EPIC_100_verb_classes.csv`'s `key` column, in `id` order; 97 classes from `verb_class`),
`noun_label` (likewise, 300 from `noun_class`), `narration_id`, `video_id` (e.g. P01_01) and `fps`
(the stream's rate, e.g. 59.94).

Each video is decoded once, however many segments it has, and each frame inside a segment is
encoded once (`segments.decode_segments`: one pass, seeking over long gaps between segments;
measured against a seek per segment there); videos are decoded on `num_workers` threads. A
segment that runs past its video's end is clipped to the end and kept
(reported); a zero-length segment, one that starts after its video's end or holds no frame, a
missing video and bad values are skipped, each counted and named in the build report.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from fractions import Fraction

import tensorflow_datasets as tfds
from absl import logging

from vivit_jax.data.builders.common import (
    BuildReport,
    VideoFileBuilderMixin,
    read_csv,
    record,
    text_problem,
    video_configs,
    video_features,
)
from vivit_jax.data.builders.kinetics import VIDEO_EXTENSIONS
from vivit_jax.data.builders.segments import Segment, decode_segments, parallel_streams

SPLIT_FILES = {
    "train": "EPIC_100_train.csv",
    "validation": "EPIC_100_validation.csv",
    "test": "EPIC_100_test_timestamps.csv",
}
CLASS_FILES = {"verb_label": "EPIC_100_verb_classes.csv", "noun_label": "EPIC_100_noun_classes.csv"}
LABEL_COLUMNS = {"verb_label": "verb_class", "noun_label": "noun_class"}
ANNOTATION_FOLDERS = ("annotations", "epic-kitchens-100-annotations", "")
_TIMESTAMP = re.compile(r"(\d+):([0-5]?\d):([0-5]?\d(?:\.\d*)?)")

_INSTRUCTIONS = """\
Put EPIC-KITCHENS-100 in the manual directory (`--manual_dir`, default
`<data_dir>/downloads/manual`), as the download scripts and the annotations repository make it:

  <manual_dir>/
    epic-kitchens-100-annotations/   (github.com/epic-kitchens/epic-kitchens-100-annotations;
      EPIC_100_train.csv              `annotations/` or the CSVs directly in <manual_dir> too)
      EPIC_100_validation.csv
      EPIC_100_test_timestamps.csv   (optional: unlabelled, labels -1)
      EPIC_100_verb_classes.csv
      EPIC_100_noun_classes.csv
    P01/videos/P01_01.MP4 ...        (<participant_id>/videos/<video_id>.MP4; or the same
                                      under <manual_dir>/EPIC-KITCHENS/)

Then:

  python -m vivit_jax.data.build --dataset=epic_kitchens_100 --manual_dir=<manual_dir> --data_dir=<data_dir>
"""


@dataclasses.dataclass
class ActionSegment(Segment):
    """One action segment: `label` is the verb class, `noun` the noun class (-1: unlabelled),
    `video_id` its video (P01_01)."""

    noun: int = -1
    video_id: str = ""


def find_annotation(manual_dir: str, name: str) -> str | None:
    for folder in ANNOTATION_FOLDERS:
        path = os.path.join(manual_dir, folder, name)
        if os.path.isfile(path):
            return path
    return None


def read_classes(path: str) -> list[str]:
    """A classes CSV (`id,key,...`): the `key` of each id, in id order.

    Raises:
      ValueError: a row's id is not an integer, repeats, or the ids are not 0..n-1.
    """
    by_id = {}
    for where, rec, problem in read_csv(path, ("id", "key"))[1]:
        value = (rec or {}).get("id", "").strip()
        if problem or not value.isdigit() or not (rec.get("key") or "").strip():
            raise ValueError(f"{where}: not '<id>,<key>,...' ({problem or f'id {value!r}'}).")
        if int(value) in by_id:
            raise ValueError(f"{where}: id {value} repeats.")
        by_id[int(value)] = rec["key"].strip()
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{path}: the ids are not 0..{len(by_id) - 1}.")
    return [by_id[i] for i in range(len(by_id))]


def parse_timestamp(value: str | None, column: str) -> tuple[Fraction | None, str | None]:
    """'HH:MM:SS.ff' → seconds (exact), or (None, why not)."""
    if value is None:
        return None, f"column {column}: missing (the row is shorter than the header)"
    match = _TIMESTAMP.fullmatch(value.strip())
    if not match:
        return None, f"column {column}: {value!r} is not HH:MM:SS.ff"
    hours, minutes, seconds = match.groups()
    return 3600 * int(hours) + 60 * int(minutes) + Fraction(seconds), None


def parse_class(value: str | None, column: str, num_classes: int) -> tuple[int, str | None]:
    value = (value or "").strip()
    if value.isdigit() and int(value) < num_classes:
        return int(value), None
    return -1, f"column {column}: {value!r} is not a class index (0..{num_classes - 1})"


def video_finder(manual_dir: str) -> Callable[[str, str], str | None]:
    """(participant_id, video_id) → the video's path, or None; each folder is listed once."""
    roots = [manual_dir, os.path.join(manual_dir, "EPIC-KITCHENS")]
    listed: dict[str, dict[str, str]] = {}

    def find(participant: str, video_id: str) -> str | None:
        for root in roots:
            folder = os.path.join(root, participant, "videos")
            if folder not in listed:
                listed[folder] = {}
                if os.path.isdir(folder):
                    for name in sorted(os.listdir(folder)):
                        stem, ext = os.path.splitext(name)
                        if ext.lower() in VIDEO_EXTENSIONS and not name.startswith("."):
                            listed[folder].setdefault(stem, os.path.join(folder, name))
            if video_id in listed[folder]:
                return listed[folder][video_id]
        return None

    return find


def _parse_segment(rec: dict, where: str, labelled: bool, num_classes: dict) -> ActionSegment:
    problems = []
    ids = {}
    for column in ("narration_id", "participant_id", "video_id"):
        ids[column] = (rec.get(column) or "").strip()
        problems.append(f"column {column}: empty" if not ids[column] else None)
        problems.append(text_problem(ids[column], f"column {column}"))
    start, problem = parse_timestamp(rec.get("start_timestamp"), "start_timestamp")
    problems.append(problem)
    stop, problem = parse_timestamp(rec.get("stop_timestamp"), "stop_timestamp")
    problems.append(problem)
    if start is not None and stop is not None and stop <= start:
        problems.append(
            f"stop_timestamp {rec['stop_timestamp'].strip()} is not after start_timestamp "
            f"{rec['start_timestamp'].strip()} (a zero-length segment)"
        )
    labels = {}
    for feature, column in LABEL_COLUMNS.items():
        labels[feature], problem = -1, None
        if labelled:
            labels[feature], problem = parse_class(rec.get(column), column, num_classes[feature])
        problems.append(problem)
    problem = "; ".join(p for p in problems if p) or None
    return ActionSegment(
        ids["narration_id"] or where,
        None,
        labels["verb_label"],
        problem=problem,
        where=where,
        noun=labels["noun_label"],
        video_id=ids["video_id"],
        start=start or Fraction(0),
        stop=stop or Fraction(0),
        start_text=(rec.get("start_timestamp") or "").strip(),
        stop_text=(rec.get("stop_timestamp") or "").strip(),
    )


def split_rows(
    split: str, path: str, num_classes: dict[str, int], find_video: Callable
) -> tuple[BuildReport, list[ActionSegment]]:
    """The segments of one split's CSV (bad ones with their `problem`) and its report so far.

    Raises:
      ValueError: a column is missing (the label columns: in train and validation).
    """
    required = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp")
    if split != "test":
        required += tuple(LABEL_COLUMNS.values())
    columns, records = read_csv(path, required)
    labelled = all(c in columns for c in LABEL_COLUMNS.values())
    report = BuildReport(split=split, labelled=labelled)
    rows, first = [], {}
    for where, rec, problem in records:
        if rec is None:
            rows.append(ActionSegment(where, None, -1, problem=problem, where=where))
            continue
        row = _parse_segment(rec, where, labelled, num_classes)
        if row.problem is None:
            if row.key in first:
                report.duplicates.append(f"{where} (the segment of {first[row.key]})")
                continue
            first[row.key] = where
            participant = rec["participant_id"].strip()
            row.path = find_video(participant, row.video_id)
            row.report_name = f"{row.key} ({participant}/videos/{row.video_id}.MP4)"
        rows.append(row)
    return report, rows


class EpicKitchens100(VideoFileBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """EPIC-KITCHENS-100 action segments: 97 verb and 300 noun classes (egocentric, 50-60 fps)."""

    name = "epic_kitchens_100"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: JPEG frames, verb_label, noun_label, ids, fps."}
    BUILDER_CONFIGS = video_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        common = video_features()  # video, video_id (Text) and fps as every builder has them
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "video": common["video"],
                    "verb_label": tfds.features.ClassLabel(),
                    "noun_label": tfds.features.ClassLabel(),
                    "narration_id": common["video_id"],
                    "video_id": common["video_id"],
                    "fps": common["fps"],
                }
            ),
            homepage="https://epic-kitchens.github.io/",
            citation="@article{damen2022rescaling, title={Rescaling Egocentric Vision: "
            "Collection, Pipeline and Challenges for EPIC-KITCHENS-100}, author={Damen, Dima "
            "and others}, journal={IJCV}, year={2022}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        paths = {
            k: find_annotation(manual_dir, f) for k, f in {**CLASS_FILES, **SPLIT_FILES}.items()
        }
        for key in ("verb_label", "noun_label", "train"):
            if paths[key] is None:
                name = {**CLASS_FILES, **SPLIT_FILES}[key]
                raise FileNotFoundError(
                    f"No {name} under {manual_dir} (or its annotations/, "
                    f"epic-kitchens-100-annotations/).\n\n{_INSTRUCTIONS}"
                )
        num_classes = {}
        for feature in CLASS_FILES:
            self.info.features[feature].names = read_classes(paths[feature])
            num_classes[feature] = self.info.features[feature].num_classes
        find_video = video_finder(manual_dir)
        generators = {}
        for split in SPLIT_FILES:
            if paths[split] is not None:
                report, rows = split_rows(split, paths[split], num_classes, find_video)
                generators[split] = self._split_generator(report, rows)
        return {split: g for split, g in generators.items() if g is not None}

    def _generate_examples(self, report: BuildReport, rows: list[ActionSegment]):
        report.rows = len(rows)
        self.build_reports[report.split] = report
        by_video: dict[str, list[ActionSegment]] = {}
        for row in rows:
            if row.problem is not None or row.path is None:
                record(report, row, None, "invalid" if row.problem else "missing")
            else:
                by_video.setdefault(row.path, []).append(row)
        config = self.builder_config

        def decode(item, stop):
            return decode_segments(item[0], item[1], config.short_side, config.jpeg_quality, stop)

        for seg, video, problem, clipped in parallel_streams(
            decode, by_video.items(), self.num_workers
        ):
            if not record(report, seg, video, problem):
                continue
            if clipped:
                report.clipped[seg.report_name] = clipped
            yield (
                seg.key,
                {
                    "video": video.frames,
                    "verb_label": seg.label,
                    "noun_label": seg.noun,
                    "narration_id": seg.key,
                    "video_id": seg.video_id,
                    "fps": video.fps,
                },
            )
        logging.info("%s %s", self.name, report.summary())
        print(f"[{self.name}] {report.summary()}", flush=True)
