"""Real processes on one machine: `python -m vivit_jax.main` on the built-in tiny dataset.

Every subprocess gets its own simulated CPU devices (`XLA_FLAGS`), talks to its peers only on
127.0.0.1 (a free port), runs under a timeout, and shares one XLA compilation cache with the
others of the session. The reference run (one process, 8 devices) is built once per session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vivit_jax.backends.cpu.tuning import KEEP_FREED_MEMORY_ENV

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 240  # Seconds for any one launch (a run takes ~15-60 s on 2 shared CPU cores).


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """One `vivit_jax.main` process; its combined output is collected line by line."""

    def __init__(self, args, *, devices: int, cache_dir: str, log_path: str):
        # As users run it: with `tuning.keep_freed_memory` (the suite's own process opts out).
        env = {k: v for k, v in os.environ.items() if k != KEEP_FREED_MEMORY_ENV}
        env.update(
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
            JAX_PLATFORMS="cpu",
            TF_CPP_MIN_LOG_LEVEL="2",
            JAX_COMPILATION_CACHE_DIR=cache_dir,
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
            PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vivit_jax.main", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._log.write(line)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        self._log.close()

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        """Blocks until a line containing `text` appears; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if text in line:
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    self.kill()
                    raise AssertionError(
                        f"{text!r} never appeared. Output:\n{self.output()[-4000:]}"
                    )
                self._cond.wait(min(left, 1.0))

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"Timed out after {timeout} s:\n{self.output()[-4000:]}") from None
        self._reader.join(10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def output(self) -> str:
        with self._cond:
            return "".join(self.lines)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="session")
def tiny_tfds(session_dir):
    from vivit_jax.data.build import build

    data_dir = str(session_dir / "tfds")
    build("moving_shapes/tiny", data_dir, None, None, None, False)
    return data_dir


@pytest.fixture(scope="session")
def corrupt_tfds(tiny_tfds, tmp_path_factory):
    """A copy of moving_shapes/tiny whose train record 17 has truncated JPEG frames."""
    import tensorflow as tf

    data_dir = tmp_path_factory.mktemp("corrupt_tfds")
    shutil.copytree(tiny_tfds, data_dir, dirs_exist_ok=True)
    (path,) = [str(p) for p in data_dir.rglob("moving_shapes-train.tfrecord*") if p.is_file()]
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    example = tf.train.Example.FromString(records[17])
    frames = example.features.feature["video"].bytes_list.value
    for i in range(len(frames)):
        frames[i] = frames[i][: len(frames[i]) // 2]
    records[17] = example.SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        for r in records:
            writer.write(r)
    return str(data_dir), path


@pytest.fixture(scope="session")
def launcher(session_dir, tiny_tfds):
    """`launch(workdir, *extra_args, devices=8, process=None) -> Launch` on configs/demo.py:tiny.

    `process=(i, n, port)` makes it process i of n with the coordinator on 127.0.0.1:port.
    Checkpoints every step, so every step is a possible resume point.
    """
    cache_dir = str(session_dir / "xla_cache")
    counter = iter(range(10**6))

    def launch(workdir, *extra, devices=8, process=None):
        args = [
            "--config=configs/demo.py:tiny",
            f"--config.dataset_configs.data_dir={tiny_tfds}",
            "--config.checkpoint_steps=1",
            # Every logged loss is one step's: a window average would depend on where a
            # killed run resumed.
            "--config.log_summary_steps=1",
            "--config.max_checkpoints_to_keep=10",
            f"--workdir={workdir}",
            *extra,
        ]
        if process is not None:
            i, n, port = process
            args += [
                f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={n}",
                f"--process_id={i}",
            ]
        log = str(session_dir / f"launch_{next(counter)}.log")
        return Launch(args, devices=devices, cache_dir=cache_dir, log_path=log)

    return launch


@pytest.fixture(scope="session")
def reference_run(session_dir, launcher):
    """The uninterrupted run: one process with 8 devices. Returns its workdir."""
    workdir = str(session_dir / "reference")
    run = launcher(workdir)
    assert run.wait() == 0, run.output()[-4000:]
    return workdir


def read_losses(workdir: str) -> dict[int, float]:
    """`{step: train/loss}` from the TensorBoard event files in `workdir`."""
    from vivit_jax.summaries import read_scalars

    return read_scalars(workdir, "train/loss")


def final_params(workdir: str, step: int = 6):
    from vivit_jax.checkpoints import load_params

    return load_params(os.path.join(workdir, "checkpoints", str(step)))


def max_abs_diff(a, b) -> float:
    import jax

    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(leaves_a, leaves_b)
    )
