"""Random access to TFRecord files: an offset index built from the record headers.

A TFRecord file is a sequence of `uint64 length, uint32 crc(length), data[length], uint32
crc(data)`. Reading only the 12-byte headers and seeking over the data gives every record's
offset without reading the videos, so the pipeline can read any example by number. That is what
makes epoch-seeded shuffles, exact resume and process-count independent batches cheap.
Files are opened through `tf.io.gfile`, so cloud paths work too (one request per header there).
"""

from __future__ import annotations

import re
import struct
import threading

import numpy as np
import tensorflow as tf

_SHARD_SPEC = re.compile(r"^(?P<base>.+)@(?P<n>\d+)$")


def expand_shard_spec(path: str) -> list[str]:
    """'name@N' → ['name-00000-of-0000N', ...] (5 digits, as DMVR / Scenic); else [path]."""
    match = _SHARD_SPEC.match(path)
    if not match:
        return [path]
    base, n = match.group("base"), int(match.group("n"))
    return [f"{base}-{i:05d}-of-{n:05d}" for i in range(n)]


class RecordIndex:
    """Offsets of all records in a list of TFRecord files; reads record `i` by global number.

    Attributes:
      files: the files, in order; record numbers run through them in this order.
      num_records: total number of records.
    """

    def __init__(self, files: list[str]):
        self.files = list(files)
        file_ids, offsets, lengths = [], [], []
        for fid, path in enumerate(self.files):
            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(f"Record file {path} does not exist.")
            off, lens = _scan(path)
            file_ids.append(np.full(len(off), fid, np.int32))
            offsets.append(off)
            lengths.append(lens)
        self._file_ids = np.concatenate(file_ids) if file_ids else np.zeros(0, np.int32)
        self._offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self._lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self._local = threading.local()

    @property
    def num_records(self) -> int:
        return len(self._offsets)

    def location(self, i: int) -> tuple[str, int]:
        """(file, record number within that file) of global record `i`, for error messages."""
        fid = int(self._file_ids[i])
        first = int(np.searchsorted(self._file_ids, fid, side="left"))
        return self.files[fid], i - first

    def read(self, i: int) -> bytes:
        """The serialized record `i`."""
        fid = int(self._file_ids[i])
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        f = handles.get(fid)
        if f is None:
            f = handles[fid] = tf.io.gfile.GFile(self.files[fid], "rb")
        f.seek(int(self._offsets[i]))
        data = f.read(int(self._lengths[i]))
        if len(data) != int(self._lengths[i]):
            file, n = self.location(i)
            raise OSError(f"{file}: record {n} is truncated.")
        return data


def _scan(path: str) -> tuple[np.ndarray, np.ndarray]:
    offsets, lengths = [], []
    with tf.io.gfile.GFile(path, "rb") as f:
        size = f.size()
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord header at byte {pos}.")
            (length,) = struct.unpack("<Q", header[:8])
            end = pos + 12 + length + 4
            if end > size:
                raise ValueError(
                    f"{path}: record {len(offsets)} at byte {pos} claims {length} bytes but the "
                    "file ends first (truncated, or not a TFRecord file)."
                )
            offsets.append(pos + 12)
            lengths.append(length)
            pos = end
    return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)
