"""TFDS builder `something_something_v2` from the official download (manual).

Labels come from `something-something-v2-labels.json` (template without brackets → index), in
index order; train/validation entries carry a `template` with `[something]` placeholders. The
test split has no labels (-1) unless a `test-answers.csv` (`<id>;<template>`) is present.
"""

from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from vivit_jax.data.builders.common import Row, VideoFileBuilderMixin, video_configs, video_features

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

Entries whose video is absent and videos that cannot be decoded are skipped and listed in the
build summary.
"""


def _template_key(template: str) -> str:
    return template.replace("[", "").replace("]", "").strip()


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
        with open(labels_path, encoding="utf-8") as f:
            label_map = {_template_key(k): int(v) for k, v in json.load(f).items()}
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

        answers = {}
        answers_path = _find(manual_dir, "test-answers.csv")
        if answers_path:
            with open(answers_path, encoding="utf-8") as f:
                for line in f:
                    if ";" in line:
                        vid, template = line.rstrip("\n").split(";", 1)
                        answers[vid.strip()] = _template_key(template)

        generators = {}
        for split, suffix in SPLIT_FILES.items():
            path = _find(manual_dir, f"{PREFIX}-{suffix}.json")
            if path is None:
                if split == "train":
                    raise FileNotFoundError(
                        f"No {PREFIX}-train.json under {manual_dir}.\n\n" + _INSTRUCTIONS
                    )
                continue
            with open(path, encoding="utf-8") as f:
                entries = json.load(f)
            rows, seen = [], set()
            for entry in entries:
                vid = str(entry["id"])
                if vid in seen:
                    continue
                seen.add(vid)
                template = entry.get("template")
                key = _template_key(template) if template else answers.get(vid)
                problem = None
                if key is not None and key not in label_map:
                    problem = f"template {template or key!r} is not in {PREFIX}-labels.json"
                label = label_map.get(key, -1) if key is not None else -1
                rows.append(Row(vid, videos.get(vid), label, f"{vid}.webm", problem))
            generators[split] = self._generate_examples(split=split, rows=rows)
        return generators

    def _generate_examples(self, split, rows):
        yield from self._generate_from_rows(split, rows)
