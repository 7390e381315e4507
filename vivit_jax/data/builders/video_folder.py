"""TFDS builder `video_folder`: a user's own videos, labelled by class folder or by a CSV.

Single-label configs (`short<N>`, `original`) read one of two layouts of the manual dir:

  (a) split folders       <split>/<class>/<video>         split: train, validation (or val), test
  (b) split lists         <class>/<video> and splits/<split>.txt, one relative path per line

Layout (b) is used when `splits/train.txt` exists (or when there is no split folder and some
`splits/<split>.txt` does). A split list is UCF101's `trainlist01.txt` style: a trailing integer
after the path is ignored (it is never the label), as are blank lines, CRLF line ends and
surrounding spaces. The label is the class folder's name (the first component of a listed path);
the class list, the same in every split, is `sorted()` (code-point order) over the class folders
of all split folders (a), or over the listed paths, missing files included (b). `video_id` is the
path relative to the split folder, or as listed. Video files are .mp4 .avi .mkv .webm .mov in any
letter case; hidden and other files are not read, and videos outside a class folder or in a
sub-folder of one are reported as ignored (a). Any split may be absent.

Multi-label configs (`multilabel_short<N>`, `multilabel_original`) read `annotations/<split>.csv`
(`val.csv` for validation accepted) with a header `path,labels`: the path relative to the manual
dir, the labels separated by `;`. Their `labels` feature is a Sequence of ClassLabel: each
example holds the sorted indices of its classes (stored in the tf.train.Example as an int64 list;
an empty list in a split without any labels); the class list is the sorted union of the labels in
all CSVs, and `builder.info.features["labels"].feature.names` holds it. The features depend on
the config because TFDS fixes them before it reads the manual dir.

Every dataset built this way is named `video_folder`: build each (UCF101, HMDB51, ...) into its
own `--data_dir`, as a finished build is never redone; `info.metadata["manual_dir"]` says which
folder a build was made from. `hmdb51_split_lists` writes HMDB51's official split files as layout
(b)'s lists.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re

import tensorflow_datasets as tfds

from vivit_jax.data import video_io
from vivit_jax.data.builders.common import (
    BuildReport,
    Row,
    VideoBuilderConfig,
    VideoFileBuilderMixin,
    clean_label,
    read_csv,
    read_text,
    text_problem,
    video_configs,
    video_features,
)
from vivit_jax.data.builders.kinetics import VIDEO_EXTENSIONS

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
_TRAILING_INTEGER = re.compile(r"(.*?)\s+[+-]?\d+")

_INSTRUCTIONS = """\
Put your videos in the manual directory (`--manual_dir`) in one of these layouts:

  (a) <manual_dir>/train/<class>/<video>       (b) <manual_dir>/<class>/<video>
      <manual_dir>/validation/<class>/<video>      <manual_dir>/splits/train.txt
      <manual_dir>/test/<class>/<video>            <manual_dir>/splits/validation.txt
      (`val/` is accepted; any split may be        <manual_dir>/splits/test.txt
      absent)                                      (one path <class>/<video> per line)

  multi-label (config multilabel_short<N>):  <manual_dir>/annotations/<split>.csv with a header
  `path,labels`, the path relative to <manual_dir>, the labels separated by ';'.

Videos: .mp4 .avi .mkv .webm .mov. Then, with a data dir of its own for each dataset:

  python -m vivit_jax.data.build --dataset=video_folder --manual_dir=<manual_dir> --data_dir=<data_dir>
"""


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(VideoBuilderConfig):
    """Attributes:
    multilabel: read `annotations/<split>.csv` (feature `labels`) instead of class folders.
    """

    multilabel: bool = False


def folder_configs() -> list[VideoFolderConfig]:
    """`video_configs()`, and each again as 'multilabel_<name>'."""
    configs = []
    for multilabel in (False, True):
        for c in video_configs():
            configs.append(
                VideoFolderConfig(
                    name=f"multilabel_{c.name}" if multilabel else c.name,
                    description=("Multi-label (annotations/<split>.csv). " if multilabel else "")
                    + c.description,
                    short_side=c.short_side,
                    jpeg_quality=c.jpeg_quality,
                    multilabel=multilabel,
                )
            )
    return configs


def is_video(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def name_problem(name: str) -> str | None:
    """Why a name read from the file system cannot be stored as text: bytes that are not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"the name {name.encode('utf-8', 'surrogateescape')!r} is not UTF-8"
    return None


def shown(name: str) -> str:
    """`name` printable and storable in JSON: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def relative_path(value: str) -> tuple[str | None, str | None]:
    """A listed path made '<class>/.../<video>' (posix, normalised), or (None, why not)."""
    path = posixpath.normpath(value.strip().replace("\\", "/"))
    if value.strip().startswith("/") or path == ".." or path.startswith("../"):
        return None, f"{value.strip()!r} is not a path inside the manual dir"
    if "/" not in path:
        return None, f"{value.strip()!r} has no class folder (<class>/<video>)"
    return path, text_problem(path, "path")


def split_folder(manual_dir: str, split: str) -> str | None:
    """The folder of `split` (layout a), or None.

    Raises:
      ValueError: two folders name the same split (validation/ and val/).
    """
    found = [n for n in SPLIT_NAMES[split] if os.path.isdir(os.path.join(manual_dir, n))]
    if len(found) > 1:
        raise ValueError(
            f"{manual_dir}: both {' and '.join(f + '/' for f in found)} hold the {split} split; "
            "keep one."
        )
    return os.path.join(manual_dir, found[0]) if found else None


def split_file(folder: str, split: str, suffix: str) -> str | None:
    for name in SPLIT_NAMES[split]:
        path = os.path.join(folder, f"{name}{suffix}")
        if os.path.isfile(path):
            return path
    return None


def scan_split_folder(folder: str) -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
    """Layout (a): the class folders of one split folder, its videos and the ignored videos.

    Returns (class folder names, [(video_id, path)] in sorted order, {relative path: why}).
    """
    classes, videos, ignored = [], [], {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if is_video(entry.name):
                ignored[shown(entry.name)] = "not in a class folder"
            continue
        problem = name_problem(entry.name)
        for root, dirs, files in os.walk(entry.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not is_video(name):
                    continue
                rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                if problem:
                    ignored[shown(rel)] = f"class folder: {problem}"
                elif root != entry.path:
                    ignored[shown(rel)] = f"in a sub-folder of class folder {shown(entry.name)!r}"
                elif name_problem(rel):
                    ignored[shown(rel)] = name_problem(name)
                else:
                    videos.append((rel, os.path.join(root, name)))
        if not problem:
            classes.append(entry.name)
    return classes, videos, ignored


def read_split_list(path: str) -> list[tuple[str, str | None, str | None]]:
    """Layout (b): [(where, relative path or None, problem)] for the non-blank lines of a list."""
    file = os.path.basename(path)
    entries = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _TRAILING_INTEGER.fullmatch(line)
        rel, problem = relative_path(match.group(1) if match else line)
        entries.append((f"{file} line {n}", rel, problem))
    return entries


def read_multilabel_csv(path: str) -> list[dict]:
    """`annotations/<split>.csv`: [{where, path, labels (sorted clean names), raw, problem}].

    Raises:
      ValueError: the file is empty or its header lacks `path` or `labels`.
    """
    rows = []
    for where, record, problem in read_csv(path, ("path", "labels"))[1]:
        if record is None:
            rows.append({"where": where, "path": None, "labels": [], "problem": problem})
            continue
        raw = record.get("labels") or ""
        problem = text_problem(raw, "column labels")
        labels = [] if problem else [clean_label(x) for x in raw.split(";")]
        rel, path_problem = relative_path(record.get("path") or "")
        if not (record.get("path") or "").strip():
            path_problem = "column path: empty"
        rows.append(
            {
                "where": where,
                "path": rel,
                "labels": sorted({x for x in labels if x}),
                "raw": raw,
                "problem": "; ".join(p for p in (path_problem, problem) if p) or None,
            }
        )
    return rows


def hmdb51_split_lists(split_dir: str, out_dir: str, split: int = 1) -> dict[str, int]:
    """Writes HMDB51's official split `split` as `<out_dir>/splits/train.txt` and `test.txt`.

    HMDB51's `testTrainMulti_7030_splits/<class>_test_split<n>.txt` files list `<video>.avi <k>`
    per line: k = 1 is train, 2 is test, 0 is in neither. Each listed video becomes the line
    `<class>/<video>.avi` of layout (b), so that `out_dir` (the folder of the unpacked class
    folders, `<class>/<video>.avi`) can be built as `video_folder`; evaluate on its `test` split.

    Returns:
      The number of videos written per list, e.g. {'train': 3570, 'test': 1530}.

    Raises:
      FileNotFoundError: `split_dir` holds no `*_test_split<split>.txt`.
      ValueError: a line is not `<video> <0|1|2>` (the message names file and line).
    """
    suffix = f"_test_split{split}.txt"
    files = sorted(n for n in os.listdir(split_dir) if n.endswith(suffix))
    if not files:
        raise FileNotFoundError(f"{split_dir}: no *{suffix} (HMDB51's split files).")
    lists = {"train": [], "test": []}
    for file in files:
        label = file[: -len(suffix)]
        for n, line in enumerate(read_text(os.path.join(split_dir, file)).splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(f"{file} line {n}: {line.strip()!r} is not '<video> <0|1|2>'.")
            if fields[1] != "0":
                lists["train" if fields[1] == "1" else "test"].append(f"{label}/{fields[0]}")
    os.makedirs(os.path.join(out_dir, "splits"), exist_ok=True)
    for name, lines in lists.items():
        with open(os.path.join(out_dir, "splits", f"{name}.txt"), "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
    return {name: len(lines) for name, lines in lists.items()}


@dataclasses.dataclass
class MultiLabelRow(Row):
    """A row of a multi-label CSV: `labels`, the sorted class indices (`label` is unused)."""

    labels: list[int] = dataclasses.field(default_factory=list)


def _class_ids(names: set[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(sorted(names))}


def folder_splits(folders: dict[str, str]) -> tuple[list[str], dict]:
    """Layout (a): the class names and {split: (report, rows)}."""
    scans = {split: scan_split_folder(folder) for split, folder in folders.items()}
    ids = _class_ids({clean_label(c) for classes, _, _ in scans.values() for c in classes})
    splits = {}
    for split, (_, videos, ignored) in scans.items():
        report = BuildReport(split=split, ignored=ignored)
        rows = []
        for rel, path in videos:
            folder_name = rel.split("/")[0]
            if clean_label(folder_name) != folder_name:
                report.normalised[folder_name] = clean_label(folder_name)
            where = f"{os.path.basename(folders[split])}/{rel}"
            label = ids[clean_label(folder_name)]
            rows.append(Row(rel, path, label, where=where, report_name=rel))
        splits[split] = (report, rows)
    return list(ids), splits


def list_splits(manual_dir: str, lists: dict[str, str]) -> tuple[list[str], dict]:
    """Layout (b): the class names and {split: (report, rows)}."""
    entries = {split: read_split_list(path) for split, path in lists.items()}
    ids = _class_ids(
        {clean_label(rel.split("/")[0]) for es in entries.values() for _, rel, p in es if not p}
    )
    splits = {}
    for split, listed in entries.items():
        report, rows, first = BuildReport(split=split), [], {}
        for where, rel, problem in listed:
            if problem:
                rows.append(Row(where, None, -1, problem=problem, where=where))
                continue
            if rel in first:
                report.duplicates.append(f"{where} (the video of {first[rel]})")
                continue
            first[rel] = where
            folder_name = rel.split("/")[0]
            if clean_label(folder_name) != folder_name:
                report.normalised[folder_name] = clean_label(folder_name)
            path = os.path.join(manual_dir, *rel.split("/"))
            path = path if os.path.isfile(path) else None
            rows.append(Row(rel, path, ids[clean_label(folder_name)], where=where, report_name=rel))
        splits[split] = (report, rows)
    return list(ids), splits


def multilabel_splits(manual_dir: str, csvs: dict[str, str]) -> tuple[list[str], dict]:
    """Multi-label CSVs: the class names and {split: (report, rows)}.

    Raises:
      ValueError: no row of any CSV has a label, or the train CSV has none.
    """
    tables = {split: read_multilabel_csv(path) for split, path in csvs.items()}
    ids = _class_ids({x for table in tables.values() for r in table for x in r["labels"]})
    if not ids:
        raise ValueError(f"{', '.join(csvs.values())}: no row has a label (column labels).")
    splits = {}
    for split, table in tables.items():
        report = BuildReport(split=split, labelled=any(r["labels"] for r in table))
        if split == "train" and not report.labelled:
            raise ValueError(
                f"{csvs[split]}: the train split needs labels, but every row's is empty."
            )
        rows, first = [], {}
        for r in table:
            where, rel = r["where"], r["path"]
            if r["problem"]:
                rows.append(MultiLabelRow(where, None, -1, problem=r["problem"], where=where))
                continue
            if rel in first:
                report.duplicates.append(f"{where} (the video of {first[rel]})")
                continue
            first[rel] = where
            for piece in r["raw"].split(";"):
                if clean_label(piece) != piece.strip():
                    report.normalised[piece.strip()] = clean_label(piece)
            problem = None
            if report.labelled and not r["labels"]:
                problem = f"{rel}: no label (column labels is empty)"
            path = os.path.join(manual_dir, *rel.split("/"))
            path = path if os.path.isfile(path) else None
            labels = [ids[x] for x in r["labels"]]
            rows.append(
                MultiLabelRow(rel, path, -1, "", problem, where, report_name=rel, labels=labels)
            )
        splits[split] = (report, rows)
    return list(ids), splits


class VideoFolder(VideoFileBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """Videos from a folder: labelled by class folder, or multi-label by a CSV per split."""

    name = "video_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: JPEG frames, label or labels, video_id, fps."}
    BUILDER_CONFIGS = folder_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        features = video_features()
        label_key = "label"
        if self.builder_config.multilabel:
            label_key = "labels"
            features = tfds.features.FeaturesDict(
                {
                    "video": features["video"],
                    "labels": tfds.features.Sequence(tfds.features.ClassLabel()),
                    "video_id": features["video_id"],
                    "fps": features["fps"],
                }
            )
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=features,
            supervised_keys=("video", label_key),
            metadata=tfds.core.MetadataDict(),  # manual_dir: which folder this build is of
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        self.info.metadata["manual_dir"] = os.path.abspath(manual_dir)
        csvs = _present(os.path.join(manual_dir, "annotations"), ".csv")
        if self.builder_config.multilabel:
            if not csvs:
                raise FileNotFoundError(
                    f"No annotations/train.csv, validation.csv or test.csv under {manual_dir}: "
                    "the multilabel configs read them (for class folders or split lists, build "
                    f"video_folder/{self.builder_config.name[len('multilabel_') :]}).\n\n"
                    + _INSTRUCTIONS
                )
            class_names, splits = multilabel_splits(manual_dir, csvs)
            self.info.features["labels"].feature.names = class_names
        else:
            class_names, splits = self._single_label_splits(manual_dir, csvs)
            self.info.features["label"].names = class_names
        generators = {split: self._split_generator(*splits[split]) for split in splits}
        return {split: g for split, g in generators.items() if g is not None}

    def _single_label_splits(self, manual_dir: str, csvs: dict) -> tuple[list[str], dict]:
        lists = _present(os.path.join(manual_dir, "splits"), ".txt")
        folders = {}
        if os.path.isdir(manual_dir):
            folders = {s: split_folder(manual_dir, s) for s in SPLIT_NAMES}
            folders = {s: f for s, f in folders.items() if f}
        if "train" in lists or (lists and not folders):
            class_names, splits = list_splits(manual_dir, lists)
            source = "the split lists"
        elif folders:
            class_names, splits = folder_splits(folders)
            source = "the split folders"
        else:
            hint = (
                f"; it has annotations/*.csv: for those build "
                f"video_folder/multilabel_{self.builder_config.name}"
                if csvs
                else ""
            )
            raise FileNotFoundError(
                f"No split folder (train/, validation/, val/, test/) and no splits/train.txt "
                f"under {manual_dir}{hint}.\n\n{_INSTRUCTIONS}"
            )
        if not class_names:
            raise ValueError(f"{manual_dir}: {source} name no class folder.\n\n{_INSTRUCTIONS}")
        return class_names, splits

    def _example(self, row: Row, video: video_io.DecodedVideo) -> dict:
        if not self.builder_config.multilabel:
            return super()._example(row, video)
        return {"video": video.frames, "labels": row.labels, "video_id": row.key, "fps": video.fps}

    def _generate_examples(self, report, rows):
        yield from self._generate_from_rows(report, rows)


def _present(folder: str, suffix: str) -> dict[str, str]:
    """{split: file} for the `<split><suffix>` files in `folder` (val<suffix> for validation)."""
    found = {split: split_file(folder, split, suffix) for split in SPLIT_NAMES}
    return {split: path for split, path in found.items() if path}
