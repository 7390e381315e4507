"""TFDS builders `kinetics400`, `kinetics600`, `kinetics700` from a local copy (manual download).

Reads DeepMind's annotation CSVs and the clips the downloaders produce; see
`MANUAL_DOWNLOAD_INSTRUCTIONS`. Class names are the sorted distinct labels of the train CSV
(alphabetical, as DeepMind's class indices), with whitespace runs made one space.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import math
import os

import tensorflow_datasets as tfds

from vivit_jax.data.builders.common import (
    BuildReport,
    Row,
    VideoFileBuilderMixin,
    clean_label,
    read_text,
    text_problem,
    video_configs,
    video_features,
)
from vivit_jax.data.video_io import VIDEO_EXTENSIONS

# Split → names the CSV and the video folder may have (DeepMind: validate.csv; CVDF mirror:
# annotations/val.csv and val/).
SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validate", "val", "validation"),
    "test": ("test",),
}

_INSTRUCTIONS = """\
Put a local copy of Kinetics-{n} in the manual directory (`--manual_dir`, default
`<data_dir>/downloads/manual`):

  <manual_dir>/
    annotations/                 (or the CSVs directly in <manual_dir>)
      train.csv                  DeepMind's CSVs: label,youtube_id,time_start,time_end,split[,is_cc]
      validate.csv               (or val.csv, as the CVDF mirror names it)
      test.csv                   (optional; a split without labels is unlabelled: label -1)
    train/                       clips <youtube_id>_<start:06d>_<end:06d>.mp4, either flat
    val/  (or validate/)         or in class folders (train/<label>/<clip>.mp4, as the
    test/                        CVDF mirror's arrange_by_classes.py makes them)

The CVDF mirror (github.com/cvdfoundation/kinetics-dataset, k{n}_downloader.sh +
k{n}_extractor.sh) produces exactly this layout in its `k{n}/` folder: pass that folder as
--manual_dir. Rows whose clip is absent or cannot be decoded, and rows with bad values (each
named by CSV file, line and column), are skipped and listed in the build summary. Then:

  python -m vivit_jax.data.build --dataset=kinetics{n} --manual_dir=<manual_dir> --data_dir=<data_dir>
"""


def find_annotation(manual_dir: str, split: str) -> str | None:
    """The CSV of `split`, trying <manual_dir>/annotations then <manual_dir>, each alias."""
    for folder in (os.path.join(manual_dir, "annotations"), manual_dir):
        for alias in SPLIT_ALIASES[split]:
            path = os.path.join(folder, f"{alias}.csv")
            if os.path.isfile(path):
                return path
        for alias in SPLIT_ALIASES[split]:  # e.g. kinetics_400_validate.csv, kinetics-600_val.csv
            matches = sorted(
                glob.glob(os.path.join(folder, f"*_{alias}.csv"))
                + glob.glob(os.path.join(folder, f"*-{alias}.csv"))
            )
            if matches:
                return matches[0]
    return None


@dataclasses.dataclass
class Annotations:
    """One Kinetics CSV: its `columns` and `rows`.

    A row is a dict: `where` ('<file> line <n>', the header being line 1), `problem` (why the row
    cannot be used, or None), youtube_id, time_start, time_end, `label` (the class name with its
    whitespace made single spaces; None when empty or there is no label column) and `raw_label`.
    """

    path: str
    columns: list[str]
    rows: list[dict]

    @property
    def labelled(self) -> bool:
        """False for a split whose rows carry no label (no label column, or all empty)."""
        return any(r["label"] for r in self.rows)


def _seconds(value: str | None, column: str) -> tuple[int | None, str | None]:
    if value is None:
        return None, f"column {column}: missing (the row is shorter than the header)"
    try:
        seconds = float(value)
    except ValueError:
        return None, f"column {column}: {value!r} is not a number"
    if not math.isfinite(seconds) or seconds < 0:
        return None, f"column {column}: {value!r} is not a time in seconds"
    return int(seconds), None


def _parse_row(record: dict, where: str) -> dict:
    row = {"where": where, "label": None, "raw_label": None}
    problems = []
    row["youtube_id"] = (record.get("youtube_id") or "").strip()
    if not row["youtube_id"]:
        problems.append("column youtube_id: empty")
    problems.append(text_problem(row["youtube_id"], "column youtube_id"))
    for column in ("time_start", "time_end"):
        row[column], problem = _seconds(record.get(column), column)
        problems.append(problem)
    raw = record.get("label")
    if raw is not None:
        problem = text_problem(raw, "column label")
        problems.append(problem)
        if problem is None:
            row["raw_label"], row["label"] = raw, clean_label(raw) or None
    row["problem"] = "; ".join(p for p in problems if p) or None
    return row


def read_annotations(path: str) -> Annotations:
    """Reads a Kinetics CSV; a row that cannot be used gets a `problem`, never an exception.

    Raises:
      ValueError: the header lacks youtube_id, time_start or time_end.
    """
    file = os.path.basename(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    columns, rows = None, []
    while True:
        line = reader.line_num + 1  # The record starts on the line after the previous one.
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows.append(
                {"where": f"{file} line {line}", "problem": f"not CSV ({e})", "label": None}
            )
            continue
        if not any(v.strip() for v in values):
            continue
        if columns is None:
            columns = [v.strip() for v in values]
            for needed in ("youtube_id", "time_start", "time_end"):
                if needed not in columns:
                    raise ValueError(f"{path}: no '{needed}' column (columns: {columns}).")
            continue
        rows.append(_parse_row(dict(zip(columns, values)), f"{file} line {line}"))
    if columns is None:
        raise ValueError(f"{path}: empty file (no header row).")
    return Annotations(path, columns, rows)


def clip_key(row: dict) -> str:
    return f"{row['youtube_id']}_{row['time_start']:06d}_{row['time_end']:06d}"


def index_videos(folders: list[str]) -> dict[str, str]:
    """Maps file stem → path for every video file under `folders` (recursively)."""
    found = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    found.setdefault(stem, os.path.join(root, name))
    return found


def video_folders(manual_dir: str, split: str) -> list[str]:
    folders = []
    for parent in (manual_dir, os.path.join(manual_dir, "videos")):
        for alias in SPLIT_ALIASES[split]:
            path = os.path.join(parent, alias)
            if os.path.isdir(path):
                folders.append(path)
    return folders


class _KineticsBase(VideoFileBuilderMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Kinetics-N from a local copy; N from `NUM_CLASSES`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: JPEG frames, label, video_id, fps."}
    BUILDER_CONFIGS = video_configs()
    NUM_CLASSES = 400

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"Kinetics-{self.NUM_CLASSES} human action clips (~10 s from YouTube).",
            features=video_features(),
            supervised_keys=("video", "label"),
            homepage="https://github.com/google-deepmind/kinetics-i3d",
            citation="@article{kay2017kinetics, title={The Kinetics Human Action Video Dataset}, "
            "author={Kay, Will and others}, journal={arXiv:1705.06950}, year={2017}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        annotations = {split: find_annotation(manual_dir, split) for split in SPLIT_ALIASES}
        if annotations["train"] is None:
            raise FileNotFoundError(
                f"No Kinetics train.csv under {manual_dir} or {manual_dir}/annotations.\n\n"
                + self.MANUAL_DOWNLOAD_INSTRUCTIONS
            )
        tables = {s: read_annotations(p) for s, p in annotations.items() if p is not None}
        train = tables["train"]
        # DeepMind's class indices are the sorted distinct labels of the whole train CSV: a row
        # skipped for another reason (a bad time) still names its class, and leaving its label
        # out would shift every index after it.
        class_names = sorted({r["label"] for r in train.rows if r["label"]})
        if not class_names:
            why = (
                "every row's label is empty"
                if "label" in train.columns
                else f"it has no 'label' column (columns: {train.columns})"
            )
            raise ValueError(f"{train.path}: the train split needs labels, but {why}.")
        if len(class_names) != self.NUM_CLASSES:
            print(
                f"[{self.name}] note: the train annotations have {len(class_names)} classes, "
                f"not {self.NUM_CLASSES}.",
                flush=True,
            )
        self.info.features["label"].names = class_names
        label_ids = {name: i for i, name in enumerate(class_names)}

        all_videos = None
        generators = {}
        for split, table in tables.items():
            folders = video_folders(manual_dir, split)
            if folders:
                videos = index_videos(folders)
            else:  # Everything in one folder: look anywhere under the manual dir.
                if all_videos is None:
                    all_videos = index_videos([manual_dir])
                videos = all_videos
            report, rows = split_rows(split, table, label_ids, videos)
            generators[split] = self._split_generator(report, rows)
        return {split: g for split, g in generators.items() if g is not None}

    def _generate_examples(self, report, rows):
        yield from self._generate_from_rows(report, rows)


def split_rows(
    split: str, table: Annotations, label_ids: dict[str, int], videos: dict[str, str]
) -> tuple[BuildReport, list[Row]]:
    """The rows of one split (bad ones with their `problem`) and its report so far."""
    report = BuildReport(split=split, labelled=table.labelled)
    rows, first = [], {}
    for r in table.rows:
        if r["label"] and r["raw_label"].strip() != r["label"]:
            report.normalised[r["raw_label"].strip()] = r["label"]
        if r["problem"]:
            rows.append(Row(r["where"], None, -1, problem=r["problem"], where=r["where"]))
            continue
        key = clip_key(r)
        if key in first:
            report.duplicates.append(f"{r['where']} (the clip of {first[key]})")
            continue
        first[key] = r["where"]
        problem = None
        if table.labelled and r["label"] is None:
            problem = f"{key}: no label (column label is empty)"
        elif r["label"] is not None and r["label"] not in label_ids:
            problem = f"{key}: label {r['label']!r} is not a train class"
        label = label_ids.get(r["label"], -1)
        rows.append(Row(key, videos.get(key), label, f"{key}.mp4", problem, r["where"]))
    return report, rows


class Kinetics400(_KineticsBase):
    __doc__ = _KineticsBase.__doc__
    NUM_CLASSES = 400
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(n=400)


class Kinetics600(_KineticsBase):
    __doc__ = _KineticsBase.__doc__
    NUM_CLASSES = 600
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(n=600)


class Kinetics700(_KineticsBase):
    __doc__ = _KineticsBase.__doc__
    NUM_CLASSES = 700
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(n=700)
