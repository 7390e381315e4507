"""TensorBoard summaries without TensorFlow: scalars into `<workdir>/events.out.tfevents.*`.

An event file is a TFRecord file of `Event` protos; it is written here with
`vivit_jax.data.records.RecordWriter` and the messages of `vivit_jax.data.protos`. Why not
TensorBoard's own `EventFileWriter`: it imports TensorFlow wherever TensorFlow is installed, and
the training process must not (clu's writers are TensorFlow's); this needs only protobuf. Only
process 0 writes; every process may call the methods.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np
from etils import epath

from vivit_jax.data.protos import Event, Summary
from vivit_jax.data.records import RecordIndex, RecordWriter


class SummaryWriter:
    """Scalar summaries of one run.

    Args:
      logdir: Where the event file goes; None writes nothing.
    """

    def __init__(self, logdir: str | None):
        self._writer = None
        if logdir is not None and jax.process_index() == 0:
            epath.Path(logdir).mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}.v2"
            self._writer = RecordWriter(os.path.join(logdir, name))
            self._add(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _add(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            return
        values = [
            Summary.Value(tag=tag, simple_value=float(np.asarray(value)))
            for tag, value in scalars.items()
        ]
        event = Event(wall_time=time.time(), step=int(step), summary=Summary(value=values))
        self._add(event)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_scalars(logdir: str, tag: str) -> dict[int, float]:
    """`{step: value}` of scalar `tag` in the event files of `logdir` (for tests and scripts)."""
    import glob

    values = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        records = RecordIndex([path])
        for i in range(records.num_records):
            event = Event.FromString(records.read(i))
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return values
