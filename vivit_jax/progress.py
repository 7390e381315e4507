"""The training progress line: loss, accuracy, steps/s, ETA and where the time went."""

from __future__ import annotations

import contextlib
import time

import jax
from absl import logging

from vivit_jax.metrics import summarize


class Timing:
    """Seconds spent in evaluations, tests and checkpoints since the run started."""

    def __init__(self):
        self.start = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - start

    def shares(self) -> str:
        wall = max(time.monotonic() - self.start, 1e-9)
        parts = [f"{k} {100 * v / wall:.0f}%" for k, v in self.seconds.items() if v / wall >= 0.01]
        return f" ({', '.join(parts)} of the time)" if parts else ""


def train_summary(pending, last_log, step: int, total: int, shares: str = "") -> dict[str, float]:
    merged = pending[0][1]
    for _, m in pending[1:]:
        merged = merged.merge(m)
    summary = summarize(jax.device_get(merged), "train")
    last_step, last_time = last_log
    now = time.monotonic()
    steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
    summary["train/steps_per_sec"] = steps_per_sec
    eta = (total - step) / max(steps_per_sec, 1e-9)
    logging.info(
        "Step %d/%d (%.0f%%): loss %.4f, accuracy %.3f, lr %.3g, %.2f steps/s, ETA %s%s.",
        step,
        total,
        100 * step / total,
        summary["train/loss"],
        summary["train/accuracy"],
        summary["train/learning_rate"],
        steps_per_sec,
        format_seconds(eta),
        shares,
    )
    return summary


def format_seconds(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"
