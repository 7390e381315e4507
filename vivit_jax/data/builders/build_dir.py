"""No partial build is left behind: TFDS's temporary folders of interrupted builds are removed.

TFDS (4.9.x, `tfds.core.utils.incomplete_dir`) writes a build into
`<data_dir>/<name>/<config>/incomplete.<6 random chars>_<version>/` and renames it to
`<version>/` when done; its `finally` removes the folder on a Python exception, but a process
killed by a signal (SIGKILL, SIGTERM from a scheduler, a lost terminal) leaves it there, as large
as the part written. `CleanBuildMixin.download_and_prepare` therefore:

- holds an exclusive lock, `<data_dir>/<name>/<config>/.build_<version>.lock`, for the whole
  build (a second build of the same dataset waits for the first, then finds it built);
- while holding it, removes every `incomplete.??????_<version>` folder there, logging its size:
  none can belong to a running build, since a running build holds the lock;
- on an exception, KeyboardInterrupt or SIGTERM during the build, removes this build's folder
  (SIGTERM is turned into SystemExit for the duration, so that the cleanup runs).

Why a lock rather than guessing from the folder: TFDS's folder names carry no process id, and
the age of the files says nothing (the shuffler keeps examples in memory for minutes). An
`fcntl.flock` lock is released by the kernel when its process ends, however it ends, so a
leftover is exactly a folder nobody holds the lock for; the finished `<version>/` folder and
other versions' folders never match the pattern. Locks need a local (or NFS) file system: for
other data dirs (gs://...) and where `fcntl` is missing (Windows) nothing is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator

from absl import logging

try:
    import fcntl
except ImportError:  # Windows: no flock; builds work, leftovers are not removed.
    fcntl = None


def _config_dir(builder) -> str:
    return os.path.dirname(os.fspath(builder.data_dir).rstrip("/"))


def _version(builder) -> str:
    return str(builder.version)


def is_local(builder) -> bool:
    return fcntl is not None and "://" not in os.fspath(builder.data_dir)


def _size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def temporary_dirs(builder) -> list[str]:
    """TFDS's `incomplete.*` folders of this builder's version (finished data never matches)."""
    folder = _config_dir(builder)
    pattern = re.compile(rf"incomplete\.[A-Z0-9]{{6}}_{re.escape(_version(builder))}")
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if pattern.fullmatch(n) and os.path.isdir(os.path.join(folder, n))
    )


def remove_temporary_dirs(builder, why: str) -> list[str]:
    """Removes `temporary_dirs(builder)`; call only while holding `build_lock(builder)`."""
    import shutil

    removed = []
    for path in temporary_dirs(builder):
        size = _size(path)
        shutil.rmtree(path, ignore_errors=True)
        message = f"[{builder.name}] removed {why}: {path} ({_human(size)})"
        logging.info(message)
        print(message, flush=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def build_lock(builder, wait: bool = True) -> Iterator[bool]:
    """Holds the build lock of `builder`'s version; yields False if not held.

    Not held: when `wait` is False and another process holds it, or when locks are not
    available (see the module docstring).
    """
    if not is_local(builder):
        yield False
        return
    folder = _config_dir(builder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f".build_{_version(builder)}.lock")
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            f.seek(0)
            holder = f.read().strip() or "another process"
            message = f"[{builder.name}] waiting for the build by {holder} to finish ({path})."
            logging.info(message)
            print(message, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()}\n")
            f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) meanwhile (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def remove_leftovers(builder) -> None:
    """Removes leftovers of interrupted builds now if no build holds the lock (else nothing)."""
    with build_lock(builder, wait=False) as held:
        if held:
            remove_temporary_dirs(builder, "the leftover of an interrupted build")


class CleanBuildMixin:
    """`download_and_prepare` under the build lock, without leftovers before or after."""

    def download_and_prepare(self, **kwargs):
        with build_lock(self) as held:
            if held:
                remove_temporary_dirs(self, "the leftover of an interrupted build")
            try:
                with sigterm_as_exit():
                    super().download_and_prepare(**kwargs)
            except BaseException:
                if held:  # Every such folder is this build's: the lock excludes others.
                    remove_temporary_dirs(self, "the partial build")
                raise
        if not self.info.splits and os.path.isdir(os.fspath(self.data_dir)):
            # Built by the process this one waited for: TFDS only said "reusing"; read its info.
            self.info.read_from_directory(self.data_dir)
