"""TFDS builder `moments_in_time`: Moments in Time v1 (MIT-IBM, manual download).

Class names and indices come from `moments_categories.txt` (`name,index` per line, split at the
last comma, so that a name may hold commas); labels are that index column, not renumbered, and
the names are in index order. `trainingSet.csv` and `validationSet.csv` have no header:
`<class>/<file>.mp4,<class>,<agreement>,<disagreement>`, the path relative to `training/` or
`validation/`; the label is the class column (a path whose folder is not it is still labelled by
it), the agreement counts are not used. A row whose class name holds commas and is not quoted is
read by finding the class after the path's folder (`a, b/x.mp4,a, b,3,0`). `video_id` is the path
as listed.
"""

from __future__ import annotations

import csv
import io
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

CATEGORIES = "moments_categories.txt"
SPLITS = {
    "train": ("trainingSet.csv", "training"),
    "validation": ("validationSet.csv", "validation"),
}

_INSTRUCTIONS = """\
Put Moments in Time v1 in the manual directory (`--manual_dir`, default
`<data_dir>/downloads/manual`), unpacked as it comes (Moments_in_Time_Raw.zip or the
256x256 release):

  <manual_dir>/
    moments_categories.txt     <name>,<index>
    trainingSet.csv            <class>/<file>.mp4,<class>,<agreement>,<disagreement>
    validationSet.csv
    training/<class>/<file>.mp4
    validation/<class>/<file>.mp4

Then:

  python -m vivit_jax.data.build --dataset=moments_in_time --manual_dir=<manual_dir> --data_dir=<data_dir>
"""


def read_categories(path: str) -> list[str]:
    """`moments_categories.txt`: the class names in index order.

    Raises:
      ValueError: a line is not `<name>,<index>`, a name or index repeats, or the indices are not
        0..n-1; the message names the line.
    """
    by_index, seen = {}, {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        name, _, index = line.rpartition(",")
        name, index = clean_label(name), index.strip()
        where = f"{os.path.basename(path)} line {n}"
        if not name or not index.isdigit() or text_problem(name, "name"):
            raise ValueError(f"{where}: {line.strip()!r} is not '<name>,<index>'.")
        if int(index) in by_index or name in seen:
            raise ValueError(f"{where}: {line.strip()!r} repeats {seen.get(name) or 'its index'}.")
        by_index[int(index)], seen[name] = name, where
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: the indices are not 0..{len(by_index) - 1}.")
    return [by_index[i] for i in range(len(by_index))]


def parse_row(fields: list[str]) -> tuple[str, str] | None:
    """(path, class) of one CSV row, or None when they cannot be told apart.

    Up to two trailing integer fields (the agreement counts) are dropped; of what is left, the
    path is the part whose first folder is the rest (a class name may hold unquoted commas).
    """
    rest = list(fields)
    for _ in range(2):
        if len(rest) > 2 and rest[-1].strip().isdigit():
            rest.pop()
    if len(rest) == 2:
        return rest[0].strip(), rest[1].strip()
    for i in range(1, len(rest)):
        path, label = ",".join(rest[:i]).strip(), ",".join(rest[i:]).strip()
        if path.split("/")[0] == label:
            return path, label
    return None


def split_rows(
    split: str, path: str, video_dir: str, label_ids: dict[str, int]
) -> tuple[BuildReport, list[Row]]:
    """The rows of one split's CSV (bad ones with their `problem`) and its report so far."""
    file = os.path.basename(path)
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    report, rows, first = BuildReport(split=split), [], {}
    while True:
        where = f"{file} line {reader.line_num + 1}"
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            rows.append(Row(where, None, -1, problem=f"not CSV ({e})", where=where))
            continue
        if not any(f.strip() for f in fields):
            continue
        parsed = parse_row(fields)
        problem = None
        if parsed is None or not parsed[0] or not parsed[1]:
            problem = f"not '<class>/<file>,<class>,<agreement>,<disagreement>': {fields!r:.80}"
        else:
            problem = text_problem(parsed[0], "path") or text_problem(parsed[1], "class")
        if problem:
            rows.append(Row(where, None, -1, problem=problem, where=where))
            continue
        rel, raw_label = parsed
        if rel in first:
            report.duplicates.append(f"{where} (the video of {first[rel]})")
            continue
        first[rel] = where
        label = clean_label(raw_label)
        if label != raw_label:
            report.normalised[raw_label] = label
        if label not in label_ids:
            problem = f"{rel}: class {label!r} is not in {CATEGORIES}"
        video = os.path.join(video_dir, *rel.split("/"))
        video = video if os.path.isfile(video) else None
        rows.append(Row(rel, video, label_ids.get(label, -1), "", problem, where, report_name=rel))
    return report, rows


class MomentsInTime(VideoFileBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """Moments in Time v1: 339 classes of events in 3 s clips (MIT-IBM Watson AI Lab)."""

    name = "moments_in_time"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: JPEG frames, label, video_id, fps."}
    BUILDER_CONFIGS = video_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=video_features(),
            supervised_keys=("video", "label"),
            homepage="http://moments.csail.mit.edu/",
            citation="@article{monfort2019moments, title={Moments in Time Dataset: one million "
            "videos for event understanding}, author={Monfort, Mathew and others}, "
            "journal={TPAMI}, year={2019}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        categories = os.path.join(manual_dir, CATEGORIES)
        train_csv = os.path.join(manual_dir, SPLITS["train"][0])
        for path in (categories, train_csv):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"No {path}.\n\n{_INSTRUCTIONS}")
        class_names = read_categories(categories)
        self.info.features["label"].names = class_names
        label_ids = {name: i for i, name in enumerate(class_names)}
        generators = {}
        for split, (csv_name, folder) in SPLITS.items():
            path = os.path.join(manual_dir, csv_name)
            if os.path.isfile(path):
                report, rows = split_rows(split, path, os.path.join(manual_dir, folder), label_ids)
                generators[split] = self._split_generator(report, rows)
        return {split: g for split, g in generators.items() if g is not None}

    def _generate_examples(self, report, rows):
        yield from self._generate_from_rows(report, rows)
