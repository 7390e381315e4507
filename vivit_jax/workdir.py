"""The workdir: created and checked writable, and held by one training run at a time.

`WorkdirLock` is an exclusive `fcntl.flock` on `<workdir>/.lock`, taken by process 0 of a run
and held until the run ends. The kernel releases it when the process dies however it dies
(SIGKILL included), so a killed run never leaves the workdir locked; a second run on the same
workdir stops at once with an error naming the process that holds it (host, pid, start time,
command), before it reads or writes anything. With several processes, process 0's outcome is
shared so that every process stops together.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys

import jax

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir."""


def check_workdir(workdir: str) -> None:
    """Creates `workdir` and checks that it is writable.

    Raises:
      ValueError: naming the directory and the OS error.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"The workdir {workdir!r} is not writable: {e}") from e


class WorkdirLock:
    """Context manager: holds `<workdir>/.lock` for the duration of a training run.

    Raises (on entry):
      WorkdirBusyError: another live process holds the lock.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        error = None
        if jax.process_index() == 0:
            try:
                self._acquire()
            except WorkdirBusyError as e:
                error = e
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            busy = multihost_utils.broadcast_one_to_all(int(error is not None))
            if busy and error is None:
                raise WorkdirBusyError(
                    f"Another run holds {self.path} (see process 0's log); not started."
                )
        if error is not None:
            raise error
        return self

    def _acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirBusyError(
                f"Another run is using the workdir {os.path.dirname(self.path)}: {self._holder()}. "
                "Wait for it to finish (or stop it), or use another --workdir. Nothing was "
                "changed."
            ) from None
        owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner).encode())
        os.fsync(fd)
        self._fd = fd

    def _holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                owner = json.load(f)
            return (
                f"process {owner['pid']} on {owner['host']}, started {owner['started']} "
                f"({owner['command']})"
            )
        except (OSError, ValueError, KeyError, TypeError):
            return f"a process holds {self.path}"

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
