"""Example sources: random access to the encoded frames and labels of one split.

A source has `num_examples`, `class_names` and `get(i) -> (frames, labels, name)`, where
`frames` is an indexable sequence of JPEG bytes (nothing is decoded here) and `labels` a list of
class indices. Two kinds: a prepared TFDS dataset (our builders) and DMVR records.
"""

from __future__ import annotations

import functools
import os

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from vivit_jax.data import (
    builders,  # noqa: F401  (registers the TFDS builders)
    dmvr,
)
from vivit_jax.data.config import DMVR_DATASET_NAMES
from vivit_jax.data.records import RecordIndex

try:  # TensorFlow stays off every GPU, so that it never competes with JAX for its memory.
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Already initialised, or no GPU support compiled in.
    pass


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


class TfdsSource:
    """One split of a dataset prepared by our TFDS builders (features video/label/video_id).

    Reads the TFRecord files directly through an offset index, so that any example can be read
    by number without reading the ones before it.
    """

    def __init__(self, builder: tfds.core.DatasetBuilder, split: str):
        if split not in builder.info.splits:
            raise SplitNotFoundError(
                f"{builder.info.full_name} has no split {split!r}; it has "
                f"{sorted(builder.info.splits)} (dataset_configs.*_split)."
            )
        info = builder.info.splits[split]
        files = [os.fspath(p) for p in info.filepaths]
        self.name = f"{builder.info.full_name}:{split}"
        self.index = RecordIndex(files)
        self.num_examples = self.index.num_records
        if self.num_examples != info.num_examples:
            raise ValueError(
                f"{self.name}: the files hold {self.num_examples} records but dataset_info says "
                f"{info.num_examples}; rebuild with --overwrite."
            )

    def get(self, i: int):
        raw = self.index.read(i)
        feature = tf.train.Example.FromString(raw).features.feature
        try:
            frames = feature["video"].bytes_list.value
            labels = list(feature["label"].int64_list.value)
            name = feature["video_id"].bytes_list.value[0].decode("utf-8", "replace")
        except (KeyError, IndexError) as e:
            file, n = self.index.location(i)
            raise ValueError(
                f"{file}, record {n}: not written by a vivit_jax builder ({e})."
            ) from None
        return frames, labels, name


@functools.lru_cache(maxsize=16)
def _dmvr_source(files: tuple[str, ...]) -> dmvr.DmvrSource:
    return dmvr.DmvrSource(list(files))


def _can_build_here(name: str) -> bool:
    """Only the generated built-in dataset, and only in a single-process run (no build races)."""
    import jax

    return name.split("/")[0] == "moving_shapes" and jax.process_count() == 1


def _tfds_builder(name: str, data_dir: str | None):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        # TFDS's message lists its whole catalogue; say the project's datasets instead.
        from vivit_jax.data.builders.names import UnknownDatasetError, unknown_dataset_message

        raise UnknownDatasetError(unknown_dataset_message(name, "config.dataset_name")) from None
    if not builder.is_prepared() and _can_build_here(name):
        # The built-in dataset is generated, not downloaded: build it on first use (~1 min).
        from vivit_jax.data.build import build

        logging.info("Building the built-in dataset %s in %s (once).", name, builder.data_dir)
        builder = build(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not built in {builder.data_dir}. Build it with:\n  "
            + build_command(name, data_dir)
        )
    return builder


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

    builder = _tfds_builder(dataset_name, cfg.data_dir)
    names = list(builder.info.features["label"].names)
    if cfg.num_classes is not None and cfg.num_classes != len(names):
        raise ValueError(
            f"dataset_configs.num_classes={cfg.num_classes} but {dataset_name} has "
            f"{len(names)} classes."
        )
    factories = {
        role: functools.partial(TfdsSource, builder, split) for role, split in roles.items()
    }
    return factories, names, len(names)
