"""Example sources: random access to the encoded frames and labels of one split, without TF.

A source has `num_examples` and `get(i) -> (frames, labels, name)`, where `frames` is an
indexable sequence of JPEG bytes (nothing is decoded here) and `labels` a list of class indices
(-1: no label). Two kinds: a dataset prepared by this package's TFDS builders, read from its
directory (`dataset_info.json`, the `<feature>.labels.txt` class names and the TFRecord shards;
neither TensorFlow nor TFDS is imported), and Scenic's DMVR records.

Label features of the prepared datasets: `label` (one class), `labels` (several, multi-label),
or `noun_label` + `verb_label` (EPIC-Kitchens: the indices `[noun, num_nouns + verb]` over the
concatenated heads, as the multi-head model reads them).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

from absl import logging
from etils import epath

from vivit_jax.data import dmvr, protos
from vivit_jax.data.config import DMVR_DATASET_NAMES
from vivit_jax.data.records import RecordIndex

# TFDS's own default when no data_dir is given.
DEFAULT_DATA_DIR = os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
_HEADS = (("noun_label", "noun"), ("verb_label", "verb"))


class DatasetNotFoundError(FileNotFoundError):
    """A dataset has not been built; the message says the command that builds it."""


class SplitNotFoundError(ValueError):
    """The dataset has no such split."""


def build_command(name: str, data_dir: str | None) -> str:
    base = name.split("/")[0].split(":")[0]
    parts = ["python -m vivit_jax.data.build", f"--dataset={name}"]
    if base != "moving_shapes":
        parts.append("--manual_dir=<folder with the downloaded videos and annotations>")
    parts.append(f"--data_dir={data_dir or '~/tensorflow_datasets'}")
    return " ".join(parts)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))


class PreparedDataset:
    """A dataset that `python -m vivit_jax.data.build` wrote: `<data_dir>/<name>/<config>/<ver>/`.

    Args:
      name: 'moving_shapes', 'kinetics400/short320', 'kinetics400/short256:1.0.0', ...; without
        a config the builder's default (recorded in `<name>/.config/metadata.json`), without a
        version the newest complete one.
      data_dir: The TFDS data directory (default `$TFDS_DATA_DIR`, else ~/tensorflow_datasets).

    Raises:
      DatasetNotFoundError: nothing complete is there; the message says how to build it.
    """

    def __init__(self, name: str, data_dir: str | None):
        self.name = name
        base, _, rest = name.partition("/")
        base, _, version = base.partition(":")
        config, _, config_version = rest.partition(":")
        version = version or config_version
        root = epath.Path(os.path.expanduser(data_dir or DEFAULT_DATA_DIR)) / base
        if not config:
            meta = root / ".config" / "metadata.json"
            config = json.loads(meta.read_text())["default_config_name"] if meta.exists() else ""
        folder = root / config if config else root
        versions = (
            [version]
            if version
            else sorted(
                (p.name for p in folder.iterdir() if (p / "dataset_info.json").exists()),
                key=_version_key,
            )
            if folder.exists()
            else []
        )
        if not versions or not (folder / versions[-1] / "dataset_info.json").exists():
            raise DatasetNotFoundError(
                f"Dataset {name!r} is not built in {root.parent}. Build it with:\n  "
                + build_command(name, data_dir)
            )
        self._open(folder / versions[-1])

    @classmethod
    def at(cls, directory) -> PreparedDataset:
        """The dataset in one version directory (`<data_dir>/<name>/<config>/<version>`)."""
        dataset = cls.__new__(cls)
        dataset._open(epath.Path(directory))
        dataset.name = f"{dataset.dataset}/{dataset.dir.parent.name}:{dataset.dir.name}"
        return dataset

    def _open(self, directory: epath.Path) -> None:
        self.dir = directory
        self.info = json.loads((self.dir / "dataset_info.json").read_text())
        self.dataset = self.info["name"]
        self.features = json.loads((self.dir / "features.json").read_text())["featuresDict"][
            "features"
        ]
        self.splits = {s["name"]: s for s in self.info["splits"]}

    def _names(self, feature: str) -> list[str]:
        path = self.dir / f"{feature}.labels.txt"
        if path.exists():
            return [line for line in path.read_text(encoding="utf-8").split("\n") if line]
        spec = self.features[feature]
        label = spec.get("classLabel") or spec.get("sequence", {}).get("feature", {}).get(
            "classLabel"
        )
        if label is None:
            raise ValueError(f"{self.dir}: {feature!r} has no class names ({feature}.labels.txt).")
        return [str(i) for i in range(int(label["numClasses"]))]

    def label_features(self) -> list[str]:
        if "label" in self.features:
            return ["label"]
        if "labels" in self.features:
            return ["labels"]
        if all(f in self.features for f, _ in _HEADS):
            return [f for f, _ in _HEADS]
        raise ValueError(f"{self.dir}: no label feature (label, labels, noun/verb_label).")

    def class_names(self) -> list[str]:
        """The class names; for EPIC-Kitchens the nouns', then the verbs'."""
        return [name for feature in self.label_features() for name in self._names(feature)]

    def split_files(self, split: str) -> tuple[list[str], int]:
        if split not in self.splits:
            raise SplitNotFoundError(
                f"{self.name} has no split {split!r}; it has {sorted(self.splits)} "
                "(dataset_configs.*_split)."
            )
        info = self.splits[split]
        shards = [int(n) for n in info.get("shardLengths", [])]
        template = info.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
        files = []
        for i in range(len(shards)):
            file = template.format(
                DATASET=self.dataset,
                SPLIT=split,
                FILEFORMAT=self.info.get("fileFormat", "tfrecord"),
                SHARD_X_OF_Y=f"{i:05d}-of-{len(shards):05d}",
                SHARD_INDEX=i,
                NUM_SHARDS=len(shards),
            )
            files.append(os.fspath(self.dir / file))
        return files, sum(shards)


class TfdsSource:
    """One split of a prepared dataset, read through an offset index of its TFRecord files, so
    that any example can be read by number without reading the ones before it.

    Args:
      dataset: A `PreparedDataset`, or a TFDS builder (or its version directory) at build time.
      split: The split's name.
    """

    def __init__(self, dataset, split: str):
        if not isinstance(dataset, PreparedDataset):
            dataset = PreparedDataset.at(getattr(dataset, "data_dir", dataset))
        files, expected = dataset.split_files(split)
        self.name = f"{dataset.name}:{split}"
        self.index = RecordIndex(files)
        self.num_examples = self.index.num_records
        self.label_features = dataset.label_features()
        self._head_sizes = [len(dataset._names(f)) for f in self.label_features]
        if self.num_examples != expected:
            raise ValueError(
                f"{self.name}: the files hold {self.num_examples} records but dataset_info says "
                f"{expected}; rebuild with --overwrite."
            )

    def get(self, i: int):
        raw = self.index.read(i)
        feature = protos.Example.FromString(raw).features.feature
        try:
            frames = feature["video"].bytes_list.value
            name = feature["video_id"].bytes_list.value[0].decode("utf-8", "replace")
            labels = self._labels(feature)
        except (KeyError, IndexError) as e:
            file, n = self.index.location(i)
            raise ValueError(
                f"{file}, record {n}: not written by a vivit_jax builder ({e})."
            ) from None
        return frames, labels, name

    def _labels(self, feature) -> list[int]:
        if self.label_features == ["label"]:
            return list(feature["label"].int64_list.value)
        if self.label_features == ["labels"]:
            kind = feature["labels"]
            if kind.WhichOneof("kind") == "float_list":  # multi-hot
                return [k for k, v in enumerate(kind.float_list.value) if v > 0]
            return list(kind.int64_list.value)
        labels, offset = [], 0
        for key, size in zip(self.label_features, self._head_sizes):
            (value,) = feature[key].int64_list.value
            labels.append(value + offset if value >= 0 else -1)
            offset += size
        return labels


@functools.lru_cache(maxsize=16)
def _dmvr_source(files: tuple[str, ...]) -> dmvr.DmvrSource:
    return dmvr.DmvrSource(list(files))


def _prepared(name: str, data_dir: str | None) -> PreparedDataset:
    from vivit_jax.data.builders.names import DATASETS, UnknownDatasetError, unknown_dataset_message

    base = name.split("/")[0].split(":")[0]
    if base not in DATASETS:
        raise UnknownDatasetError(unknown_dataset_message(name, "config.dataset_name"))
    try:
        return PreparedDataset(name, data_dir)
    except DatasetNotFoundError:
        if base != "moving_shapes" or not _single_process():
            raise
    # The built-in dataset is generated, not downloaded: build it on first use (~1 min), in a
    # process of its own (building uses TensorFlow; training does not).
    logging.info("Building the built-in dataset %s (once).", name)
    command = [sys.executable, "-m", "vivit_jax.data.build", f"--dataset={name}"]
    if data_dir:
        command.append(f"--data_dir={data_dir}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 and "No module named 'tensorflow" in done.stderr:
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not built, and building it needs TensorFlow and TFDS, which "
            "are not installed here: pip install 'vivit_jax[build]', or build it on another "
            f"machine and copy the data directory:\n  {build_command(name, data_dir)}"
        )
    if done.returncode != 0:
        raise DatasetNotFoundError(
            f"Building the built-in dataset {name!r} failed (exit {done.returncode}):\n"
            f"{done.stderr.strip()[-2000:]}\nBuild it with:\n  {build_command(name, data_dir)}"
        )
    return PreparedDataset(name, data_dir)


def _single_process() -> bool:
    """Only a single-process run builds the built-in dataset (no build races)."""
    import jax

    return jax.process_count() == 1


def open_split_sources(dataset_name: str, cfg) -> tuple[dict, list[str], int]:
    """Returns ({split role: source factory}, class_names, num_classes).

    Split roles are 'train', 'eval', 'test'; a factory returns the source (or raises naming the
    split). Counts are available without opening DMVR shards twice.
    """
    roles = {"train": cfg.train_split, "eval": cfg.eval_split, "test": cfg.test_split}
    if dataset_name in DMVR_DATASET_NAMES:
        for key in ("tables", "num_classes"):
            if cfg[key] is None:
                raise ValueError(f"dataset_configs.{key} must be set to read DMVR records.")
        tables = cfg.tables.to_dict() if hasattr(cfg.tables, "to_dict") else dict(cfg.tables)

        def factory(split):
            if split not in tables:
                raise SplitNotFoundError(
                    f"dataset_configs.tables has no entry {split!r} (it has {sorted(tables)})."
                )
            return _dmvr_source(tuple(dmvr.table_files(cfg.base_dir, tables[split])))

        num_classes = int(cfg.num_classes)
        names = [str(i) for i in range(num_classes)]
        return (
            {role: functools.partial(factory, split) for role, split in roles.items()},
            names,
            num_classes,
        )

    dataset = _prepared(dataset_name, cfg.data_dir)
    names = dataset.class_names()
    if cfg.num_classes is not None and cfg.num_classes != len(names):
        raise ValueError(
            f"dataset_configs.num_classes={cfg.num_classes} but {dataset_name} has "
            f"{len(names)} classes."
        )
    factories = {
        role: functools.partial(TfdsSource, dataset, split) for role, split in roles.items()
    }
    return factories, names, len(names)
