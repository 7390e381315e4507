"""What the evaluation counts and writes: per-class tallies over videos, the results JSON, the
confusion-matrix image and the one-line summary (see `vivit_jax.evaluate` for the schema)."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from vivit_jax import config_lib, losses

RESULTS_DIR = "eval"
MAX_CONFUSION_CLASSES = 500  # Largest confusion matrix drawn as an image.
_MAX_TALLY_CLASSES = 4096  # Larger outputs get no confusion counts (memory).


def config_class_splits(config) -> tuple[int, ...] | None:
    """The head sizes of a multi-head config, else None."""
    if config.model_name != config_lib.MULTIHEAD:
        return None
    return tuple(int(n) for n in config.dataset_configs.class_splits)


def config_head_names(config) -> list[str]:
    """`dataset_configs.split_names`, or '1', '2', ... (as Scenic)."""
    splits = config_class_splits(config)
    names = config.dataset_configs.split_names
    return list(names) if names else [str(i + 1) for i in range(len(splits))]


# ---------------------------------------------------------------------------------------------
# Host-side tallies.


class HeadTally:
    """Per-class top-1 and confusion counts of one head (or of the whole output)."""

    def __init__(self, names: list[str]):
        self.names = names
        n = len(names)
        self.videos = np.zeros(n, np.int64)
        self.hits = np.zeros(n, np.int64)
        self.confusion = np.zeros((n, n), np.int64) if n <= _MAX_TALLY_CLASSES else None

    def add(self, scores: np.ndarray, targets: np.ndarray, top1_hits: np.ndarray) -> None:
        true = np.argmax(targets, -1)  # Multi-label: the first positive class.
        np.add.at(self.videos, true, 1)
        np.add.at(self.hits, true, top1_hits.astype(np.int64))
        if self.confusion is not None:
            np.add.at(self.confusion, (true, np.argmax(scores, -1)), 1)

    def summary(self) -> dict[str, Any]:
        seen = self.videos > 0
        acc = np.where(seen, self.hits / np.maximum(self.videos, 1), np.nan)
        return {
            "mean_class_top1": float(np.mean(acc[seen])) if seen.any() else None,
            "per_class_top1": {
                n: (None if np.isnan(a) else float(a)) for n, a in zip(self.names, acc)
            },
            "per_class_num_videos": {n: int(c) for n, c in zip(self.names, self.videos)},
        }


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class average precision of `[N, C]` scores against `[N, C]` 0/1 targets: for each
    class, the mean over its positives of the precision at their rank (ties broken by order),
    as scikit-learn's `average_precision_score`; NaN for a class with no positive."""
    order = np.argsort(-scores, axis=0, kind="stable")
    hits = np.take_along_axis(targets > 0, order, axis=0).astype(np.float64)
    ranks = np.arange(1, len(scores) + 1)[:, None]
    precision = np.cumsum(hits, axis=0) / ranks
    positives = hits.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, (precision * hits).sum(0) / positives, np.nan)


class Tally:
    """Sums over videos; checks that each video counts once. For the multi-label model it also
    keeps every video's scores, for the mean average precision (mAP) over classes."""

    def __init__(self, config, class_names: list[str]):
        self.multilabel = config.model_name == "vivit_multilabel_classification"
        self.scores: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        self.names = list(class_names)
        self.splits = config_class_splits(config)
        self.sums: dict[str, float] = {}
        self.num_videos = 0
        self.seen: set[int] = set()
        if self.splits:
            bounds = np.cumsum((0,) + self.splits)
            self.heads = {
                name: HeadTally(head_class_names(class_names, lo, hi))
                for name, lo, hi in zip(config_head_names(config), bounds[:-1], bounds[1:])
            }
        else:
            self.heads = {None: HeadTally(list(class_names))}

    def add(self, out: dict[str, Any]) -> None:
        mask = np.asarray(out["batch_mask"]) > 0
        ids = np.asarray(out["video_index"])[mask].tolist()
        repeated = self.seen.intersection(ids) or (len(set(ids)) < len(ids))
        if repeated:
            raise RuntimeError(f"Videos counted twice in the test stream: {sorted(repeated)[:5]}.")
        self.seen.update(ids)
        self.num_videos += int(mask.sum())
        hits = {k: np.asarray(v)[mask] for k, v in out["hits"].items()}
        for key, value in [("loss", np.asarray(out["loss"])[mask]), *hits.items()]:
            self.sums[key] = self.sums.get(key, 0.0) + float(np.sum(value))
        scores = np.asarray(out["scores"])[mask]
        targets = np.asarray(out["label"])[mask]
        if targets.ndim == 1:
            targets = np.eye(scores.shape[-1], dtype=np.float32)[targets]
        if self.multilabel:
            self.scores.append(scores)
            self.targets.append(targets)
        if self.splits:
            parts = zip(
                losses.split_heads(scores, self.splits), losses.split_heads(targets, self.splits)
            )
            for (name, head), (s, t) in zip(self.heads.items(), parts):
                head.add(s, t, hits[f"{name}/top1"])
        else:
            self.heads[None].add(scores, targets, hits["top1"])

    def summary(self) -> dict[str, Any]:
        n = max(self.num_videos, 1)
        out = {"num_videos": self.num_videos}
        out.update({k: self.sums.get(k, 0.0) / n for k in ("top1", "top5", "loss")})
        if self.multilabel and self.scores:
            ap = average_precision(np.concatenate(self.scores), np.concatenate(self.targets))
            out["mAP"] = float(np.nanmean(ap)) if np.isfinite(ap).any() else None
            out["per_class_ap"] = {
                n: (None if np.isnan(a) else float(a)) for n, a in zip(self.names, ap)
            }
        if not self.splits:
            out.update(self.heads[None].summary())
            return out
        out["heads"] = {
            name: {
                "top1": self.sums[f"{name}/top1"] / n,
                "top5": self.sums[f"{name}/top5"] / n,
                **head.summary(),
            }
            for name, head in self.heads.items()
        }
        return out


def head_class_names(names: list[str], lo: int, hi: int) -> list[str]:
    """The class names of the head holding outputs [lo, hi)."""
    part = list(names[lo:hi])
    if part == [str(i) for i in range(lo, hi)]:  # Plain indices: number within the head.
        return [str(i) for i in range(hi - lo)]
    return part


# ---------------------------------------------------------------------------------------------


def results_path(workdir: str, split: str) -> str:
    """`<workdir>/eval/<split>_results.json`."""
    return os.path.join(workdir, RESULTS_DIR, f"{split}_results.json")


def write_results(results: dict[str, Any], workdir: str) -> str:
    """Writes the JSON, the confusion PNGs and counts to `<workdir>/eval/`; returns the JSON
    path. Only process 0 writes."""
    results = dict(results)
    confusion = results.pop("_confusion", {})
    names = results.pop("_class_names", {})
    directory = os.path.join(workdir, RESULTS_DIR)
    split = results["split"]
    path = results_path(workdir, split)
    files = {}
    for head, counts in confusion.items():
        if counts is None:
            continue
        stem = f"{split}_confusion" + (f"_{head}" if head else "")
        files[head or "all"] = {"counts": f"{stem}.npy"}
        if len(counts) <= MAX_CONFUSION_CLASSES:
            files[head or "all"]["image"] = f"{stem}.png"
    results["confusion_matrix"] = files
    if jax.process_index() != 0:
        return path
    os.makedirs(directory, exist_ok=True)
    for head, counts in confusion.items():
        entry = files.get(head or "all")
        if entry is None:
            continue
        np.save(os.path.join(directory, entry["counts"]), counts)
        if "image" in entry:
            title = f"{split} {head or ''}: rows true, columns predicted ({results['num_videos']} videos)"
            confusion_image(counts, names[head], title).save(
                os.path.join(directory, entry["image"])
            )
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def confusion_image(counts: np.ndarray, class_names: list[str], title: str = ""):
    """A row-normalised confusion matrix as a PIL image (white → dark blue); class names are
    written beside the rows when there are at most 40 classes."""
    from PIL import Image, ImageDraw

    n = len(counts)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    cell = max(1, min(16, 800 // max(n, 1)))
    light, dark = np.array([247, 251, 255.0]), np.array([8, 48, 107.0])
    rgb = light + rows[..., None] * (dark - light)
    grid = np.repeat(np.repeat(rgb.astype(np.uint8), cell, 0), cell, 1)
    label_w = 8 + 6 * max(len(s) for s in class_names) if n <= 40 else 8
    top = 24
    image = Image.new("RGB", (label_w + grid.shape[1] + 8, top + grid.shape[0] + 8), "white")
    image.paste(Image.fromarray(grid), (label_w, top))
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), title, fill="black")
    if n <= 40:
        for i, name in enumerate(class_names):
            draw.text((4, top + i * cell + max(0, cell // 2 - 5)), name, fill="black")
    return image


def summary_line(results: dict[str, Any], path: str | None = None) -> str:
    """One line: the accuracies, what was counted and where the file is."""
    r = results
    if "heads" in r:
        acc = f"action top-1 {100 * r['top1']:.2f}% top-5 {100 * r['top5']:.2f}%" + "".join(
            f", {name} top-1 {100 * h['top1']:.2f}%" for name, h in r["heads"].items()
        )
    else:
        acc = f"top-1 {100 * r['top1']:.2f}%, top-5 {100 * r['top5']:.2f}%"
    if r.get("mAP") is not None:
        acc = f"mAP {100 * r['mAP']:.2f}%, " + acc
    line = (
        f"{r['split']}: {acc} on {r['num_videos']} videos × {r['num_views']} views "
        f"({r['num_test_clips']} clips × {r['spatial_crops']} crops, mean of {r['averaging']}), "
        f"checkpoint {r['checkpoint']}, {r['elapsed_seconds']:.1f} s"
    )
    return line + (f" → {path}" if path else "")
