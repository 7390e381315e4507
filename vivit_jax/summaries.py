"""TensorBoard summaries without TensorFlow: scalars into `<workdir>/events.out.tfevents.*`.

An event file is a TFRecord file of `Event` protos (TensorBoard's `event_pb2`); it is written
here with `vivit_jax.data.records.RecordWriter`. Why not TensorBoard's own `EventFileWriter`:
it imports TensorFlow wherever TensorFlow is installed, and the training process must not (clu's
writers are TensorFlow's). Only process 0 writes; every process may call the methods.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2

from vivit_jax.data.records import RecordWriter


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
            self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _add(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            return
        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=float(np.asarray(value)))
            for tag, value in scalars.items()
        ]
        event = event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )
        self._add(event)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_scalars(logdir: str, tag: str) -> dict[int, float]:
    """`{step: value}` of `tag` in the event files of `logdir` (for tests and scripts)."""
    import glob
    import os

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    kind = value.WhichOneof("value")
                    values[event.step] = (
                        value.simple_value
                        if kind == "simple_value"
                        else float(np.frombuffer(value.tensor.tensor_content, np.float32)[0])
                        if value.tensor.tensor_content
                        else float(value.tensor.float_val[0])
                    )
    return values
