"""The input pipeline: example stream → uint8 clips → per-host batches → global jax.Arrays.

No TensorFlow: records are read through an offset index (`records.py`) and parsed with the
protobuf runtime (`protos.py`); Grain (`grain.MapDataset`) runs the host work — JPEG decoding,
frame sampling, scale jitter, crops, flips (`clips.py`, `host_ops.py`) — on threads (and with
`dataset_configs.num_workers`, in worker processes). Clips reach the device as uint8, a quarter
of float32's bytes; normalisation, colour jitter, RandAugment and mixup run there, inside the
jitted steps (`augment.py`).

How the stream is defined (the basis of determinism, exact resume and multi-host):
  * Train: position p = 0, 1, 2, ... of an endless stream; epoch e = p // N holds example
    `perm_e[p % N]`, where `perm_e` is a permutation of the N examples seeded by (seed, e).
    Global batch s holds positions [s*B, (s+1)*B). Clip sampling and every host augmentation draw
    are keyed on (seed, p). So batch s is a pure function of (seed, s): `start_step=k` starts
    at position k*B and reads nothing before it.
  * Each process reads and decodes only its own rows of each global batch (rows
    [i*B/n, (i+1)*B/n) for process i of n, or the rows its devices hold in `mesh`), by random
    access to the records. Hence the global batch does not depend on the number of processes:
    2 processes × 4 devices see exactly what 1 process × 8 devices sees.
  * Eval and test: position p is example p (file order) for p < N, padding beyond; there are
    ceil(N / B) steps on every process, the padding rows have `batch_mask` 0 and
    `video_index` -1, and every video appears exactly once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import grain
import jax
import numpy as np
from absl import flags, logging

from vivit_jax.data import config as data_config
from vivit_jax.data import host_ops
from vivit_jax.data.clips import ClipMaker, CorruptVideoError, LabelError  # noqa: F401
from vivit_jax.data.sources import SplitNotFoundError, open_split_sources

_ENDLESS = 2**62


@dataclasses.dataclass
class Dataset:
    """Attributes:
    train_iter: endless iterator of train batches (starting at `start_step`).
    valid_iter: callable returning a fresh one-pass iterator over the eval split.
    test_iter: callable returning a fresh one-pass iterator of multi-view test batches.
    meta_data: num_classes, class_names, num_train_examples, num_eval_examples,
      num_test_examples (videos), input_shape (per example: (T, H, W, 3)), test_input_shape
      ((V, T, H, W, 3)), num_test_views, target_is_onehot, input_dtype (uint8),
      num_eval_steps, num_test_steps.
    """

    train_iter: Iterator[dict[str, Any]]
    valid_iter: Callable[[], Iterator[dict[str, Any]]]
    test_iter: Callable[[], Iterator[dict[str, Any]]]
    meta_data: dict[str, Any]


def video_test_views(frames, dataset_configs) -> np.ndarray:
    """The multi-view test input of one video, exactly as `test_iter` makes it.

    Args:
      frames: the video's encoded (JPEG) frames, e.g. `video_io.decode_video(...).frames`.
      dataset_configs: `config.dataset_configs` (num_frames, stride, min_resize, crop_size,
        num_test_clips, do_three_spatial_crops).

    Returns:
      uint8 `[V, T, crop, crop, 3]`, views ordered crop-major (view = crop * clips + clip);
      `vivit_jax.data.augment.normalize` turns them into the model's input.
    """
    cfg = data_config.resolve(dataset_configs)
    indices = host_ops.test_indices(len(frames), cfg.num_test_clips, cfg.num_frames, cfg.stride)
    unique, gather = np.unique(indices.reshape(-1), return_inverse=True)
    encoded = [frames[int(k)] for k in unique]
    h, w = host_ops.decode_jpeg(encoded[0]).shape[:2]
    return host_ops.test_views(
        encoded, gather, h, w, cfg, cfg.num_test_clips, cfg.do_three_spatial_crops
    )


# ---------------------------------------------------------------------------------------------
# Batching and placement.


def local_rows(global_batch: int, mesh, process_index, process_count, key: str):
    """[lo, hi): the rows of each global batch that this process reads."""
    if mesh is None:
        pi = jax.process_index() if process_index is None else process_index
        pc = jax.process_count() if process_count is None else process_count
        if not 0 <= pi < pc:
            raise ValueError(f"process_index={pi} must be in [0, process_count={pc}).")
        if global_batch % pc:
            raise ValueError(
                f"{key}={global_batch} must be divisible by the number of processes ({pc})."
            )
        per = global_batch // pc
        return pi * per, (pi + 1) * per
    if process_index not in (None, jax.process_index()) or process_count not in (
        None,
        jax.process_count(),
    ):
        raise ValueError(
            "With a mesh, process_index/process_count must be this process's own (leave them "
            "None); simulate other processes with mesh=None."
        )
    if "data" not in mesh.axis_names:
        raise ValueError(f"The mesh needs an axis named 'data' (it has {mesh.axis_names}).")
    data_size = mesh.shape["data"]
    if global_batch % data_size:
        raise ValueError(
            f"{key}={global_batch} must be divisible by the mesh's 'data' axis size ({data_size})."
        )
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    # Row ranges, not rows: a batch may be large (its size is checked elsewhere).
    blocks = sorted(
        {
            index[0].indices(global_batch)[:2]
            for index in sharding.addressable_devices_indices_map((global_batch,)).values()
        }
    )
    lo, hi = blocks[0][0], blocks[-1][1]
    if any(a[1] != b[0] for a, b in zip(blocks, blocks[1:])):
        raise ValueError("This process's devices do not hold a contiguous block of the batch.")
    return lo, hi


def _threads(cfg) -> int:
    if cfg.num_parallel_calls != -1:
        return int(cfg.num_parallel_calls)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class _BatchMaker:
    """This host's rows of global batch `step`: the clips of `ClipMaker`, made on a pool of
    `threads` threads (JPEG decoding and resizing release the GIL), stacked. Picklable (the
    pool is made where it is used), so that each worker process makes whole batches."""

    def __init__(self, maker: ClipMaker, threads: int):
        self.maker = maker
        self.threads = threads
        self._pool = None

    def __getstate__(self):
        return {"maker": self.maker, "threads": self.threads, "_pool": None}

    def __call__(self, step) -> dict[str, np.ndarray]:
        per = self.maker.hi - self.maker.lo
        first = int(step) * per
        if self.threads > 1 and self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, "vivit-clips")
        run = self._pool.map if self.threads > 1 else map
        examples = list(run(self.maker, range(first, first + per)))
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class _Split:
    """One split's Grain pipeline for this process's rows: element s is batch s."""

    def __init__(self, maker: ClipMaker, cfg, mesh):
        self.maker = maker
        self.mode = maker.mode
        self.cfg = cfg
        self.mesh = mesh
        self.num_examples = maker.n
        b = maker.global_batch
        self.num_steps = None if self.mode == "train" else math.ceil(self.num_examples / b)

    def iterate(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        stop = _ENDLESS if self.num_steps is None else self.num_steps
        ds = grain.MapDataset.range(start_step, stop).map(
            _BatchMaker(self.maker, _threads(self.cfg))
        )
        # Two batches in the making at a time (each on the pool), `prefetch` ready ahead.
        options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=max(1, self.cfg.prefetch))
        it = ds.to_iter_dataset(options)
        if self.cfg.num_workers:
            if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags (library use).
                flags.FLAGS.mark_as_parsed()
            it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.cfg.num_workers))
        sharding = None
        if self.mesh is not None:
            sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
        b = self.maker.global_batch
        for batch in it:
            if sharding is not None:
                batch = {
                    k: jax.make_array_from_process_local_data(sharding, v, (b,) + v.shape[1:])
                    for k, v in batch.items()
                }
            yield batch


def _unlabelled(source) -> bool:
    """A split whose first example has no label (the builders store -1 for unlabelled splits)."""
    _, labels, _ = source.get(0)
    return any(int(label) < 0 for label in labels)


def _flip_default(dataset_name: str, cfg) -> bool:
    if cfg.random_flip is not None:
        return bool(cfg.random_flip)
    text = dataset_name
    if cfg.tables is not None:
        tables = cfg.tables.to_dict() if hasattr(cfg.tables, "to_dict") else dict(cfg.tables)
        text += " " + " ".join(str(v) for v in tables.values())
    text = text.lower()
    return not ("something" in text or "ssv2" in text)


def _seed(config) -> int:
    for key in ("rng_seed", "seed"):
        if key in config and config[key] is not None:
            return int(config[key]) & 0x7FFFFFFF
    return 0


def get_dataset(
    config, *, mesh=None, start_step: int = 0, process_index=None, process_count=None
) -> Dataset:
    """Builds the train, eval and test input pipelines for `config`.

    Reads: `config.dataset_name` (a dataset built by `python -m vivit_jax.data.build` such as
    'moving_shapes', 'moving_shapes/tiny', 'kinetics400', 'kinetics400/short256',
    'something_something_v2', or 'video_tfrecord_dataset' for DMVR records),
    `config.dataset_configs` (keys and defaults in `vivit_jax.data.config`), `config.batch_size`
    (global train batch), `config.eval_batch_size` (global eval batch; default batch_size),
    `config.rng_seed` (or `config.seed`; default 0).

    Args:
      config: the experiment ConfigDict.
      mesh: a jax Mesh with a 'data' axis; batches then are global jax.Arrays sharded over it.
      start_step: first train step to produce (exact resume).
      process_index, process_count: override jax's (to simulate hosts; only with mesh=None).

    Returns:
      A `Dataset`. Pipelines are built lazily: a split is opened on first use.
    """
    cfg = data_config.resolve(config.dataset_configs if "dataset_configs" in config else None)
    dataset_name = config.dataset_name
    batches = _batch_sizes(config, cfg)
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    seed = _seed(config)
    factories, class_names, num_classes = open_split_sources(dataset_name, cfg)
    flip = _flip_default(dataset_name, cfg)
    rows = {
        role: local_rows(batches[role], mesh, process_index, process_count, _BATCH_KEYS[role])
        for role in batches
    }
    splits: dict[str, _Split] = {}

    def split(role):
        if role not in splits:
            maker = ClipMaker(
                factories[role](), role, cfg, seed, num_classes, batches[role], rows[role], flip
            )
            splits[role] = _Split(maker, cfg, mesh)
        return splits[role]

    counts = {role: _count_examples(split, role, cfg) for role in batches}
    meta = _meta_data(cfg, num_classes, class_names, counts, batches)
    return Dataset(
        train_iter=split("train").iterate(start_step),
        valid_iter=lambda: split("eval").iterate(),
        test_iter=lambda: split("test").iterate(),
        meta_data=meta,
    )


_BATCH_KEYS = {
    "train": "config.batch_size",
    "eval": "config.eval_batch_size",
    "test": "config.dataset_configs.test_batch_size",
}


def _batch_sizes(config, cfg) -> dict[str, int]:
    """The global batch of each split: train, eval (default: train's), test (default: eval's)."""
    train = int(config.batch_size)
    eval_ = int(config.eval_batch_size) if config.get("eval_batch_size") else train
    batches = {"train": train, "eval": eval_, "test": int(cfg.test_batch_size or eval_)}
    for role, value in batches.items():
        if value < 1:
            raise ValueError(f"{_BATCH_KEYS[role]}={value} must be >= 1.")
    return batches


def _count_examples(split, role: str, cfg) -> int:
    """How many videos `role` evaluates or trains on: 0 for a missing or unlabelled eval split."""
    try:
        source = split(role)
    except SplitNotFoundError:
        return 0
    if role != "train" and source.num_examples and _unlabelled(source.maker.source):
        key = {"eval": "eval_split", "test": "test_split"}[role]
        logging.warning(
            "dataset_configs.%s=%r has no labels (its videos are stored with label -1), so "
            "it is not evaluated; set dataset_configs.%s to a labelled split such as "
            "'validation'.",
            key,
            cfg[key],
            key,
        )
        return 0
    return source.num_examples


def _meta_data(cfg, num_classes, class_names, counts, batches) -> dict:
    """`Dataset.meta_data`: classes, example and step counts, input shapes."""
    views = cfg.num_test_clips * (3 if cfg.do_three_spatial_crops else 1)
    c = cfg.crop_size
    return {
        "num_classes": num_classes,
        "class_names": class_names,
        "num_train_examples": counts["train"],
        "num_eval_examples": counts["eval"],
        "num_test_examples": counts["test"],
        "input_shape": (cfg.num_frames, c, c, 3),
        "test_input_shape": (views, cfg.num_frames, c, c, 3),
        "num_test_views": views,
        "target_is_onehot": bool(cfg.one_hot_labels or cfg.multi_label),
        "input_dtype": np.uint8,
        "num_eval_steps": math.ceil(counts["eval"] / batches["eval"]),
        "num_test_steps": math.ceil(counts["test"] / batches["test"]),
    }
