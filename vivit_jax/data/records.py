"""TFRecord files without TensorFlow: an offset index for random access, and a writer.

A TFRecord file is a sequence of `uint64 length, uint32 masked crc32c(length), data[length],
uint32 masked crc32c(data)`. Reading only the 12-byte headers and seeking over the data gives
every record's offset without reading the videos, so the pipeline can read any example by
number. That is what makes epoch-seeded shuffles, exact resume and process-count independent
batches cheap. Files are opened through `etils.epath`, so cloud paths work too (one request per
header there). Reads do not check the CRCs (a damaged JPEG is caught where frames are read).
"""

from __future__ import annotations

import re
import struct
import threading

import numpy as np
from etils import epath

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

    Picklable (worker processes get a copy; each opens its own file handles).

    Attributes:
      files: the files, in order; record numbers run through them in this order.
      num_records: total number of records.
    """

    def __init__(self, files: list[str]):
        self.files = [str(f) for f in files]
        file_ids, offsets, lengths = [], [], []
        for fid, path in enumerate(self.files):
            if not epath.Path(path).exists():
                raise FileNotFoundError(f"Record file {path} does not exist.")
            off, lens = _scan(path)
            file_ids.append(np.full(len(off), fid, np.int32))
            offsets.append(off)
            lengths.append(lens)
        self._file_ids = np.concatenate(file_ids) if file_ids else np.zeros(0, np.int32)
        self._offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self._lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_local"]  # Open file handles stay with their thread.
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
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
            f = handles[fid] = epath.Path(self.files[fid]).open("rb")
        f.seek(int(self._offsets[i]))
        data = f.read(int(self._lengths[i]))
        if len(data) != int(self._lengths[i]):
            file, n = self.location(i)
            raise OSError(f"{file}: record {n} is truncated.")
        return data


def _scan(path: str) -> tuple[np.ndarray, np.ndarray]:
    offsets, lengths = [], []
    with epath.Path(path).open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
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


# ---------------------------------------------------------------------------------------------
# Writing.


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord frames use it. The `google-crc32c` package's C code
    where it is installed; else this table-driven version (slow, ~10 MB/s, for small files)."""
    try:
        import google_crc32c

        return google_crc32c.value(data)
    except ImportError:
        pass
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class RecordWriter:
    """Writes a TFRecord file (readable by TensorFlow and by `RecordIndex`)."""

    def __init__(self, path: str):
        self._file = epath.Path(path).open("wb")

    def write(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self._file.write(length + struct.pack("<I", _masked(crc32c(length))))
        self._file.write(data + struct.pack("<I", _masked(crc32c(data))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
