"""TFDS builder `something_something_v2` from the official download (manual).

Labels come from `something-something-v2-labels.json` (template without brackets → index), in
index order; train/validation entries carry a `template` with `[something]` placeholders. The
test split has no labels (-1) unless a `test-answers.csv` (`<id>;<template>`) is present.
An entry that cannot be used (not an object, no or bad `id`, a `template` that is not a string
or not a class, no template in a labelled split) is skipped and named by its file and index
(`something-something-v2-train.json[3]`, counting from 0) in the build summary.
"""

from __future__ import annotations

import json
import os
from typing import Any

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

PREFIX = "something-something-v2"
SPLIT_FILES = {"train": "train", "validation": "validation", "test": "test"}

_INSTRUCTIONS = """\
Put the Something-Something-v2 download (Qualcomm / 20BN) in the manual directory
(`--manual_dir`, default `<data_dir>/downloads/manual`), unpacked as it comes:

  <manual_dir>/
    labels/                                  (the labels archive; or the files in <manual_dir>)
      something-something-v2-labels.json
      something-something-v2-train.json
      something-something-v2-validation.json
      something-something-v2-test.json       (optional)
      test-answers.csv                       (optional: <id>;<label> gives test labels)
    20bn-something-something-v2/             (the video parts, concatenated and unpacked;
      1.webm  2.webm  ...                     `videos/` is accepted too)

Then:

  python -m vivit_jax.data.build --dataset=something_something_v2 --manual_dir=<manual_dir> --data_dir=<data_dir>

Entries whose video is absent or cannot be decoded, and entries with bad fields, are skipped
and listed in the build summary.
"""


def _template_key(template: str) -> str:
    return clean_label(template.replace("[", "").replace("]", ""))


def _read_json(path: str) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from None


def read_label_map(path: str) -> dict[str, int]:
    """`something-something-v2-labels.json`: class name (template without brackets) → index.

    Raises:
      ValueError: the file is not a JSON object of name → index, naming the bad key.
    """
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object of template -> class index.")
    label_map = {}
    for template, index in data.items():
        if isinstance(index, bool) or not isinstance(index, (int, str)):
            raise ValueError(f"{path}: key {template!r}: {index!r} is not a class index.")
        try:
            label_map[_template_key(template)] = int(index)
        except ValueError:
            raise ValueError(f"{path}: key {template!r}: {index!r} is not a class index.") from None
    return label_map


def read_answers(path: str | None) -> dict[str, str]:
    """`test-answers.csv` (`<id>;<template>` per line): id → class name."""
    answers = {}
    for line in read_text(path).splitlines() if path else []:
        if ";" in line:
            vid, template = line.split(";", 1)
            answers[vid.strip()] = _template_key(template)
    return answers


def parse_entry(entry: Any, where: str, answers: dict[str, str]) -> dict:
    """One JSON entry → dict: where, problem, id, template, key (class name or None)."""
    out = {"where": where, "problem": None, "id": None, "template": None, "key": None}
    if not isinstance(entry, dict):
        out["problem"] = f"not a JSON object but {type(entry).__name__} {entry!r:.60}"
        return out
    vid = entry.get("id")
    if vid is None:
        out["problem"] = "no 'id'"
        return out
    if isinstance(vid, bool) or not isinstance(vid, (str, int)):
        out["problem"] = f"key id: {vid!r:.60} is not a string or integer"
        return out
    vid = out["id"] = str(vid).strip()
    template = out["template"] = entry.get("template")
    if not vid:
        out["problem"] = "key id: empty"
    elif text_problem(vid, "key id"):
        out["problem"] = text_problem(vid, "key id")
    elif template is not None and not isinstance(template, str):
        out["problem"] = f"{vid}: key template: {template!r:.60} is not a string"
    elif template is not None and text_problem(template, "key template"):
        out["problem"] = f"{vid}: " + text_problem(template, "key template")
    elif template and template.strip():
        out["key"] = _template_key(template)
    else:
        out["key"] = answers.get(vid)
    return out


def split_rows(
    split: str, path: str, answers: dict, label_map: dict, videos: dict
) -> tuple[BuildReport, list[Row]]:
    """The rows of one split's JSON (bad ones with their `problem`) and its report so far.

    Raises:
      ValueError: the file is not a JSON list.
    """
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: not a JSON list of entries.")
    file = os.path.basename(path)
    parsed = [parse_entry(e, f"{file}[{i}]", answers) for i, e in enumerate(entries)]
    report = BuildReport(split=split, labelled=any(p["key"] for p in parsed))
    rows, first = [], {}
    for p in parsed:
        where, vid, key = p["where"], p["id"], p["key"]
        if p["problem"]:
            rows.append(Row(where, None, -1, problem=p["problem"], where=where))
            continue
        if vid in first:
            report.duplicates.append(f"{where} (the video of {first[vid]})")
            continue
        first[vid] = where
        if p["template"] and key != p["template"].replace("[", "").replace("]", "").strip():
            report.normalised[p["template"].strip()] = key
        problem = None
        if report.labelled and key is None:
            problem = f"{vid}: no label (no template)"
        elif key is not None and key not in label_map:
            problem = f"{vid}: template {p['template'] or key!r} is not in {PREFIX}-labels.json"
        label = label_map.get(key, -1) if key is not None else -1
        rows.append(Row(vid, videos.get(vid), label, f"{vid}.webm", problem, where))
    return report, rows


def _find(manual_dir: str, name: str) -> str | None:
    for folder in (os.path.join(manual_dir, "labels"), manual_dir):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


class SomethingSomethingV2(VideoFileBuilderMixin, tfds.core.GeneratorBasedBuilder):
    """Something-Something-v2: 174 classes of hand-object interactions (VP9 .webm, 12 fps)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: JPEG frames, label, video_id, fps."}
    BUILDER_CONFIGS = video_configs()
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=video_features(),
            supervised_keys=("video", "label"),
            homepage="https://developer.qualcomm.com/software/ai-datasets/something-something",
            citation='@inproceedings{goyal2017something, title={The "something something" '
            "video database for learning and evaluating visual common sense}, "
            "author={Goyal, Raghav and others}, booktitle={ICCV}, year={2017}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        labels_path = _find(manual_dir, f"{PREFIX}-labels.json")
        if labels_path is None:
            raise FileNotFoundError(
                f"No {PREFIX}-labels.json under {manual_dir} or {manual_dir}/labels.\n\n"
                + self.MANUAL_DOWNLOAD_INSTRUCTIONS
            )
        label_map = read_label_map(labels_path)
        class_names = [name for name, _ in sorted(label_map.items(), key=lambda kv: kv[1])]
        if [label_map[n] for n in class_names] != list(range(len(class_names))):
            raise ValueError(f"{labels_path}: label indices are not 0..{len(class_names) - 1}.")
        self.info.features["label"].names = class_names

        video_dir = None
        for name in ("20bn-something-something-v2", "videos"):
            if os.path.isdir(os.path.join(manual_dir, name)):
                video_dir = os.path.join(manual_dir, name)
                break
        if video_dir is None:
            video_dir = manual_dir
        videos = {}
        for entry in os.scandir(video_dir):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in (".webm", ".mp4"):
                videos.setdefault(stem, entry.path)

        answers = read_answers(_find(manual_dir, "test-answers.csv"))
        generators = {}
        for split, suffix in SPLIT_FILES.items():
            path = _find(manual_dir, f"{PREFIX}-{suffix}.json")
            if path is None:
                if split == "train":
                    raise FileNotFoundError(
                        f"No {PREFIX}-train.json under {manual_dir}.\n\n" + _INSTRUCTIONS
                    )
                continue
            report, rows = split_rows(split, path, answers, label_map, videos)
            if split == "train" and not report.labelled:
                raise ValueError(
                    f"{path}: the train split needs labels, but no entry has a template."
                )
            generators[split] = self._split_generator(report, rows)
        return {split: g for split, g in generators.items() if g is not None}

    def _generate_examples(self, report, rows):
        yield from self._generate_from_rows(report, rows)
