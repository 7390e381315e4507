"""TFDS builders `kinetics400`, `kinetics600`, `kinetics700` from a local copy (manual download).

Reads DeepMind's annotation CSVs and the clips the downloaders produce; see
`MANUAL_DOWNLOAD_INSTRUCTIONS`. Class names are the sorted distinct labels of the train CSV
(alphabetical, as DeepMind's class indices).
"""

from __future__ import annotations

import csv
import glob
import os

import tensorflow_datasets as tfds

from vivit_jax.data.builders.common import Row, VideoFileBuilderMixin, video_configs, video_features

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")

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
      test.csv                   (optional; rows without a label column get label -1)
    train/                       clips <youtube_id>_<start:06d>_<end:06d>.mp4, either flat
    val/  (or validate/)         or in class folders (train/<label>/<clip>.mp4, as the
    test/                        CVDF mirror's arrange_by_classes.py makes them)

The CVDF mirror (github.com/cvdfoundation/kinetics-dataset, k{n}_downloader.sh +
k{n}_extractor.sh) produces exactly this layout in its `k{n}/` folder: pass that folder as
--manual_dir. Rows whose clip is absent and clips that cannot be decoded are skipped and listed
in the build summary. Then:

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


def read_annotations(path: str) -> list[dict]:
    """Rows of a Kinetics CSV as dicts with youtube_id, time_start, time_end, label (or None)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = fields
        for needed in ("youtube_id", "time_start", "time_end"):
            if needed not in fields:
                raise ValueError(f"{path}: no '{needed}' column (columns: {fields}).")
        rows = []
        for raw in reader:
            label = raw.get("label")
            rows.append(
                {
                    "youtube_id": raw["youtube_id"].strip(),
                    "time_start": int(float(raw["time_start"])),
                    "time_end": int(float(raw["time_end"])),
                    "label": label.strip() if label is not None and label.strip() else None,
                }
            )
    return rows


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
        class_names = sorted({r["label"] for r in tables["train"] if r["label"] is not None})
        if not class_names:
            raise ValueError(f"{annotations['train']}: no labels in the train annotations.")
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
            rows, seen = [], set()
            for r in table:
                key = clip_key(r)
                if key in seen:
                    continue
                seen.add(key)
                problem = None
                if r["label"] is not None and r["label"] not in label_ids:
                    problem = f"label {r['label']!r} is not a train class"
                label = label_ids.get(r["label"], -1)
                rows.append(
                    Row(key, videos.get(key), label, expected_name=f"{key}.mp4", problem=problem)
                )
            generators[split] = self._generate_examples(split=split, rows=rows)
        return generators

    def _generate_examples(self, split, rows):
        yield from self._generate_from_rows(split, rows)


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
