"""The original's DMVR records: `tf.train.SequenceExample`s → {frames, labels, key}.

Format (what Scenic's `video_tfrecord_dataset` reads):
  feature_lists['image/encoded']: one JPEG per frame (a bytes_list of one value per step).
  context['clip/label/index']: int64, one or more class indices (several → multi-label).
  context['clip/label/text'], context['video/filename'] (optional): class name, video name.
Files come from `base_dir` + `tables[split]`, where a table is 'name@N' (shards
'name-00000-of-0000N'), one file, or a list of files.

Records are parsed in Python with the protobuf runtime (`vivit_jax.data.protos`, no
TensorFlow), so that a record not in this format fails with an error naming the file, the record
number in it and the feature that is missing or of the wrong type.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from etils import epath

from vivit_jax.data import protos
from vivit_jax.data.records import RecordIndex, RecordWriter, expand_shard_spec

FRAMES_KEY = "image/encoded"
LABEL_KEY = "clip/label/index"
TEXT_KEY = "clip/label/text"
NAME_KEY = "video/filename"


class RecordFormatError(ValueError):
    """A record does not match the DMVR SequenceExample format."""


def table_files(base_dir: str | None, table) -> list[str]:
    """Expands a `tables[split]` entry to a list of files under `base_dir`."""
    entries = [table] if isinstance(table, str) else list(table)
    files = []
    for entry in entries:
        path = os.path.join(base_dir, entry) if base_dir else entry
        files.extend(expand_shard_spec(path))
    return files


def _kind(feature) -> str:
    return feature.WhichOneof("kind") or "empty"


def parse(raw: bytes, where: str, with_frames: bool = True):
    """Parses one serialized SequenceExample.

    Args:
      raw: the serialized record.
      where: '<file>, record <n>' for error messages.
      with_frames: also return the frame list.

    Returns:
      (frames, labels, name): a sequence of JPEG bytes (a view, not a copy), the list of label
      indices, and the video file name ('' if absent).

    Raises:
      RecordFormatError: naming `where` and the missing or mismatched feature.
    """
    try:
        seq = protos.SequenceExample.FromString(raw)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types.
        raise RecordFormatError(f"{where}: not a tf.train.SequenceExample ({e}).") from None
    context = seq.context.feature
    if LABEL_KEY not in context:
        hint = ""
        if not seq.feature_lists.feature_list and context:
            hint = (
                " It has no feature_lists at all: it looks like a tf.train.Example, not a "
                "SequenceExample."
            )
        raise RecordFormatError(
            f"{where}: missing context feature '{LABEL_KEY}' (int64). Context features present: "
            f"{sorted(context) or 'none'}.{hint}"
        )
    label = context[LABEL_KEY]
    if _kind(label) != "int64_list":
        raise RecordFormatError(
            f"{where}: context feature '{LABEL_KEY}' is a {_kind(label)}, expected int64_list."
        )
    labels = list(label.int64_list.value)
    if not labels:
        raise RecordFormatError(f"{where}: context feature '{LABEL_KEY}' is empty.")
    name = ""
    if NAME_KEY in context and _kind(context[NAME_KEY]) == "bytes_list":
        values = context[NAME_KEY].bytes_list.value
        name = values[0].decode("utf-8", "replace") if values else ""
    frames: Sequence[bytes] = ()
    if with_frames:
        lists = seq.feature_lists.feature_list
        if FRAMES_KEY not in lists:
            raise RecordFormatError(
                f"{where}: missing feature_lists['{FRAMES_KEY}'] (one JPEG per frame). "
                f"Feature lists present: {sorted(lists) or 'none'}."
            )
        steps = lists[FRAMES_KEY].feature
        if not steps:
            raise RecordFormatError(f"{where}: feature_lists['{FRAMES_KEY}'] has no frames.")
        first = steps[0]
        if _kind(first) != "bytes_list" or len(first.bytes_list.value) != 1:
            raise RecordFormatError(
                f"{where}: feature_lists['{FRAMES_KEY}'] step 0 is a {_kind(first)} with "
                f"{len(first.bytes_list.value)} values; expected a bytes_list with one JPEG."
            )
        frames = _FrameView(steps, where)
    return frames, labels, name


class _FrameView(Sequence):
    """Lazily indexes the frames of a parsed SequenceExample, checking each accessed step."""

    def __init__(self, steps, where):
        self._steps = steps
        self._where = where

    def __len__(self):
        return len(self._steps)

    def __getitem__(self, i):
        step = self._steps[i]
        if _kind(step) != "bytes_list" or not step.bytes_list.value:
            raise RecordFormatError(
                f"{self._where}: feature_lists['{FRAMES_KEY}'] step {i} is a {_kind(step)}, "
                "expected a bytes_list with one JPEG."
            )
        return step.bytes_list.value[0]


class DmvrSource:
    """Random access to DMVR records of one split.

    Attributes:
      files: the shard files.
      num_examples: number of records.
    """

    def __init__(self, files: list[str]):
        missing = [f for f in files if not epath.Path(f).exists()]
        if missing:
            raise FileNotFoundError(
                f"DMVR record files not found: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                " (from dataset_configs.base_dir + dataset_configs.tables)."
            )
        self.index = RecordIndex(files)
        self.files = files
        self.num_examples = self.index.num_records
        if self.num_examples:
            self.get(0)  # Fail at start-up, not mid-training, on a wrong format.

    def where(self, i: int) -> str:
        file, n = self.index.location(i)
        return f"{file}, record {n}"

    def get(self, i: int):
        """(frames, labels, name) of record `i`; raises RecordFormatError naming it."""
        return parse(self.index.read(i), self.where(i))


def write_records(path: str, examples, num_shards: int = 1) -> str:
    """Writes DMVR records; returns the 'path@N' table spec (or `path` for one shard).

    Args:
      path: output path without shard suffix.
      examples: iterable of dicts with `frames` (list of JPEG bytes), `label` (int or list of
        ints) and optional `text`, `name`.
      num_shards: records are dealt round-robin over this many shards.
    """
    spec = f"{path}@{num_shards}" if num_shards > 1 else path
    files = expand_shard_spec(spec)
    writers = [RecordWriter(f) for f in files]
    try:
        for i, ex in enumerate(examples):
            seq = protos.SequenceExample()
            labels = ex["label"] if isinstance(ex["label"], list | tuple) else [ex["label"]]
            seq.context.feature[LABEL_KEY].int64_list.value.extend(int(x) for x in labels)
            if ex.get("text") is not None:
                seq.context.feature[TEXT_KEY].bytes_list.value.append(ex["text"].encode())
            if ex.get("name") is not None:
                seq.context.feature[NAME_KEY].bytes_list.value.append(ex["name"].encode())
            frames = seq.feature_lists.feature_list[FRAMES_KEY]
            for jpeg in ex["frames"]:
                frames.feature.add().bytes_list.value.append(jpeg)
            writers[i % num_shards].write(seq.SerializeToString())
    finally:
        for w in writers:
            w.close()
    return spec
