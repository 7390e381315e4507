"""The input pipeline: example stream → clips → per-process batches → global jax.Arrays.

How the stream is defined (the basis of determinism, exact resume and multi-host):
  * Train: position p = 0, 1, 2, ... of an endless stream; epoch e = p // N holds example
    `perm_e[p % N]`, where `perm_e` is a permutation of the N examples seeded by (seed, e).
    Global batch s holds positions [s*B, (s+1)*B). Clip sampling and every augmentation draw
    are keyed on (seed, p). So batch s is a pure function of (seed, s): `start_step=k` starts
    at position k*B and reads nothing before it.
  * Each process reads and decodes only its own rows of each global batch (rows
    [i*B/n, (i+1)*B/n) for process i of n, or the rows its devices hold in `mesh`), by random
    access to the records. Hence the global batch does not depend on the number of processes:
    2 processes × 4 devices see exactly what 1 process × 8 devices sees. The cost: every
    process builds an offset index of all record files (reads each record's 12-byte header).
  * Eval and test: position p is example p (file order) for p < N, padding beyond; there are
    ceil(N / B) steps on every process, the padding rows have `batch_mask` 0 and
    `video_index` -1, and every video appears exactly once.

Batches are dicts of numpy arrays, or with a `mesh` global `jax.Array`s sharded over its
'data' axis (replicated over any other axis such as 'model').
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from vivit_jax.data import config as data_config
from vivit_jax.data import ops
from vivit_jax.data.randaugment import randaugment
from vivit_jax.data.sources import SplitNotFoundError, open_split_sources

_ENDLESS = 2**62

# Open batch generators. At exit they are closed first, which deletes their tf.data iterators:
# an iterator left alive with `py_function` calls in flight deadlocks interpreter shutdown.
_OPEN_GENERATORS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open_generators():
    for gen in list(_OPEN_GENERATORS):
        gen.close()
    gc.collect()


@dataclasses.dataclass
class Dataset:
    """Attributes:
    train_iter: endless iterator of train batches (starting at `start_step`).
    valid_iter: callable returning a fresh one-pass iterator over the eval split.
    test_iter: callable returning a fresh one-pass iterator of multi-view test batches.
    meta_data: num_classes, class_names, num_train_examples, num_eval_examples,
      num_test_examples (videos), input_shape (per example: (T, H, W, 3)), test_input_shape
      ((V, T, H, W, 3)), num_test_views, target_is_onehot, num_eval_steps, num_test_steps.
    """

    train_iter: Iterator[dict[str, Any]]
    valid_iter: Callable[[], Iterator[dict[str, Any]]]
    test_iter: Callable[[], Iterator[dict[str, Any]]]
    meta_data: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Python side: which frames of which example.


class _Fetcher:
    """Maps a stream position to (encoded frames, gather indices, labels, example index)."""

    def __init__(self, source, mode: str, cfg, seed: int, views_clips: int, num_classes: int):
        self.source = source
        self.num_classes = num_classes
        self.mode = mode
        self.cfg = cfg
        self.seed = seed
        self.num_clips = views_clips
        self.n = source.num_examples
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        frames_per_example = cfg.num_frames * (views_clips if mode == "test" else 1)
        self._empty = (
            np.zeros(0, object),
            np.zeros(frames_per_example, np.int32),
            np.zeros(0, np.int64),
            np.int64(-1),
        )

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n)
                self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
                self._perms[epoch] = perm
            return perm

    def example_index(self, position: int) -> int:
        if self.mode == "train":
            return int(self.permutation(position // self.n)[position % self.n])
        return position if position < self.n else -1

    def __call__(self, position):
        try:
            return self._fetch(int(position))
        except BaseException as e:  # Surfaced by the iterator wrapper with its own message.
            self.error = e
            raise

    def _fetch(self, position: int):
        index = self.example_index(position)
        if index < 0:
            return self._empty
        frames, labels, _ = self.source.get(index)
        self._check_labels(labels, index, position)
        n = len(frames)
        if n == 0:
            raise CorruptVideoError(f"{self._where(index, position)}: the video has no frames.")
        cfg = self.cfg
        if self.mode == "train":
            rng = np.random.default_rng([self.seed, position, 1])
            indices = ops.train_indices(n, cfg.num_frames, cfg.stride, rng)
        elif self.mode == "eval":
            indices = ops.central_indices(n, cfg.num_frames, cfg.stride)
        else:
            indices = ops.test_indices(n, self.num_clips, cfg.num_frames, cfg.stride).reshape(-1)
        unique, gather = np.unique(indices, return_inverse=True)
        encoded = np.array([frames[int(k)] for k in unique], dtype=object)
        for k, data in zip(unique, encoded):
            if not _complete_jpeg(data):
                raise CorruptVideoError(
                    f"{self._where(index, position)}: frame {int(k)} of {n} is not a complete "
                    f"JPEG ({len(data)} bytes; truncated or overwritten)."
                )
        return encoded, gather.astype(np.int32), np.asarray(labels, np.int64), np.int64(index)

    def _check_labels(self, labels, index: int, position: int) -> None:
        offset = self.cfg.label_offset
        for stored in labels:
            label = int(stored) - offset
            if 0 <= label < self.num_classes:
                continue
            shifted = f" - dataset_configs.label_offset {offset} = {label}" if offset else ""
            hint = (
                " The example has no label (an unlabelled split?); rebuild the dataset (rows "
                "without a label are skipped at build time) or choose a labelled split."
                if int(stored) < 0
                else " Check dataset_configs.label_offset and dataset_configs.num_classes."
            )
            raise LabelError(
                f"{self._where(index, position)}: label {int(stored)}{shifted} is outside "
                f"[0, {self.num_classes}) ({self.num_classes} classes).{hint}"
            )

    def _where(self, index: int, position: int) -> str:
        records = getattr(self.source, "index", None)
        where = f"example {index}"
        if hasattr(records, "location"):
            file, n = records.location(index)
            where = f"{file}, record {n} (example {index})"
        return f"{self.mode} stream position {position}: {where}"


class LabelError(ValueError):
    """A stored label is not a class of the model; the message names the example and key."""


class CorruptVideoError(ValueError):
    """A stored video cannot be decoded. The message names the file and record; rebuild the
    dataset (`python -m vivit_jax.data.build ... --overwrite`) or remove the record."""


def _complete_jpeg(data: bytes) -> bool:
    """Start-of-image marker first and end-of-image marker at the end (allowing a little
    trailing padding): catches empty, truncated and overwritten frames without decoding."""
    return data[:2] == b"\xff\xd8" and b"\xff\xd9" in data[-16:]


# ---------------------------------------------------------------------------------------------
# Graph side: decode and augment.


def _train_clip(encoded, gather, seed, cfg, flip: bool):
    aug = cfg.augmentation_params
    frames = ops.decode_frames(encoded, gather)
    frames = ops.resize_smallest(frames, cfg.min_resize)
    if aug.do_jitter_scale:
        frames = ops.scale_jitter(
            frames, seed, aug.scale_min_factor, aug.scale_max_factor, aug.prob_scale_jitter
        )
    frames = ops.ensure_min_size(frames, cfg.crop_size)
    frames = ops.random_crop(frames, cfg.crop_size, seed)
    if flip:
        frames = ops.random_flip(frames, seed)
    if aug.do_rand_augment:
        frames = randaugment(
            frames, aug.rand_augment_num_layers, aug.rand_augment_magnitude, ops.fold(seed, 20)
        )
    frames = ops.normalize(frames, cfg.zero_centering)
    if aug.do_color_augment and not aug.do_rand_augment:
        frames = ops.color_augment(
            frames, seed, cfg.zero_centering, aug.prob_color_augment, aug.prob_color_drop
        )
    return frames


def _eval_clip(encoded, gather, cfg):
    frames = ops.decode_frames(encoded, gather)
    frames = ops.resize_smallest(frames, cfg.min_resize)
    return ops.normalize(ops.central_crop(frames, cfg.crop_size), cfg.zero_centering)


def _test_views(encoded, gather, cfg, num_clips: int, three_crops: bool):
    """[V, T, c, c, 3], views ordered crop-major: view = crop * num_clips + clip (as Scenic)."""
    t, c = cfg.num_frames, cfg.crop_size
    frames = ops.decode_frames(encoded, gather)
    frames = ops.resize_smallest(frames, cfg.min_resize)
    if three_crops:
        crops = [ops.spatial_crop(frames, c, i) for i in range(3)]
    else:
        crops = [ops.central_crop(frames, c)]
    views = tf.reshape(tf.stack(crops), [len(crops) * num_clips, t, c, c, 3])
    return ops.normalize(views, cfg.zero_centering)


def video_test_views(frames, dataset_configs) -> np.ndarray:
    """The multi-view test input of one video, exactly as `test_iter` makes it.

    Args:
      frames: the video's encoded (JPEG) frames, e.g. `video_io.decode_video(...).frames`.
      dataset_configs: `config.dataset_configs` (num_frames, stride, min_resize, crop_size,
        num_test_clips, do_three_spatial_crops, zero_centering).

    Returns:
      float32 `[V, T, crop, crop, 3]`, views ordered crop-major (view = crop * clips + clip).
    """
    cfg = data_config.resolve(dataset_configs)
    indices = ops.test_indices(len(frames), cfg.num_test_clips, cfg.num_frames, cfg.stride)
    unique, gather = np.unique(indices.reshape(-1), return_inverse=True)
    encoded = tf.constant([frames[int(k)] for k in unique], tf.string)
    views = _test_views(
        encoded, tf.constant(gather, tf.int32), cfg, cfg.num_test_clips, cfg.do_three_spatial_crops
    )
    return views.numpy()


def _labels(labels, cfg, num_classes: int):
    labels = tf.cast(labels, tf.int32) - cfg.label_offset
    if cfg.multi_label:
        return tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.float32), axis=0)
    label = labels[0]
    if cfg.one_hot_labels:
        return tf.one_hot(label, num_classes, dtype=tf.float32)
    return label


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


class _Split:
    """One split's tf.data pipeline for this process's rows."""

    def __init__(self, source, mode, cfg, seed, num_classes, global_batch, rows, flip, mesh):
        self.mode = mode
        self.cfg = cfg
        self.global_batch = global_batch
        self.lo, self.hi = rows
        self.mesh = mesh
        self.num_clips = cfg.num_test_clips if mode == "test" else 1
        self.three_crops = mode == "test" and cfg.do_three_spatial_crops
        self.fetcher = _Fetcher(source, mode, cfg, seed, self.num_clips, num_classes)
        self.seed = seed
        self.num_classes = num_classes
        self.flip = flip
        self.num_examples = source.num_examples
        self.num_steps = None if mode == "train" else math.ceil(self.num_examples / global_batch)

    def _process(self, position, encoded, gather, labels, index):
        cfg = self.cfg
        frames_needed = cfg.num_frames * self.num_clips
        encoded.set_shape([None])
        gather.set_shape([frames_needed])
        labels.set_shape([None])
        c = cfg.crop_size
        if self.mode == "train":
            seed = tf.stack([tf.constant(self.seed, tf.int64), position])
            out = {
                "inputs": _train_clip(encoded, gather, seed, cfg, self.flip),
                "label": _labels(labels, cfg, self.num_classes),
                "batch_mask": tf.constant(1.0, tf.float32),
            }
        else:
            if self.mode == "eval":
                shape = [cfg.num_frames, c, c, 3]

                def real():
                    return _eval_clip(encoded, gather, cfg)
            else:
                views = self.num_clips * (3 if self.three_crops else 1)
                shape = [views, cfg.num_frames, c, c, 3]

                def real():
                    return _test_views(encoded, gather, cfg, self.num_clips, self.three_crops)

            valid = index >= 0
            inputs = tf.cond(valid, real, lambda: tf.zeros(shape, tf.float32))
            inputs.set_shape(shape)
            label = tf.cond(
                valid,
                lambda: _labels(labels, cfg, self.num_classes),
                lambda: _labels(tf.constant([0], tf.int64), cfg, self.num_classes) * 0,
            )
            out = {
                "inputs": inputs,
                "label": label,
                "batch_mask": tf.cast(valid, tf.float32),
                "video_index": tf.cast(index, tf.int32),
            }
        return out

    def tf_dataset(self, start_step: int = 0) -> tf.data.Dataset:
        per = self.hi - self.lo
        end = _ENDLESS if self.num_steps is None else self.num_steps * per
        b, lo = self.global_batch, self.lo
        # Nothing here needs AutoGraph (no Python control flow on tensors): skip its source parsing.
        no_autograph = tf.autograph.experimental.do_not_convert
        positions = tf.data.Dataset.range(start_step * per, end).map(
            no_autograph(lambda i: (i // per) * b + lo + i % per)
        )
        parallel = (
            tf.data.AUTOTUNE if self.cfg.num_parallel_calls == -1 else self.cfg.num_parallel_calls
        )

        def fetch(position):
            encoded, gather, labels, index = tf.py_function(
                self.fetcher, [position], [tf.string, tf.int32, tf.int64, tf.int64]
            )
            return position, encoded, gather, labels, index

        ds = positions.map(no_autograph(fetch), num_parallel_calls=parallel, deterministic=True)
        ds = ds.map(no_autograph(self._process), num_parallel_calls=parallel, deterministic=True)
        ds = ds.batch(per, drop_remainder=True).prefetch(self.cfg.prefetch)
        options = tf.data.Options()
        options.deterministic = True
        options.experimental_optimization.inject_prefetch = False
        # No autotuning thread: TF 2.21 wakes it for an iterator's cancellation before marking
        # the iterator cancelled, so it can sleep on (up to a minute) while the iterator's
        # deletion waits for it. num_parallel_calls=-1 then means one call per schedulable core
        # (autotuning's ceiling) where TF has `initial_parallelism` (2.18 does, 2.14 did not),
        # else tf.data's default, min(16, cores). Decode throughput measured the same without
        # autotuning (experiments/README.md, "Input pipeline").
        options.autotune.enabled = False
        if hasattr(type(options.autotune), "initial_parallelism"):
            options.autotune.initial_parallelism = len(os.sched_getaffinity(0))
        return ds.with_options(options)

    def iterate(self, start_step: int = 0) -> Iterator[dict[str, Any]]:
        gen = self._iterate(start_step)
        _OPEN_GENERATORS.add(gen)
        return gen

    def _iterate(self, start_step: int) -> Iterator[dict[str, Any]]:
        it = iter(self.tf_dataset(start_step))
        sharding = None
        if self.mesh is not None:
            sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except tf.errors.OpError as e:
                if self.fetcher.error is not None:
                    raise self.fetcher.error from None
                raise RuntimeError(f"Input pipeline failed ({self.mode}): {e.message}") from None
            batch = {k: v.numpy() for k, v in batch.items()}
            if sharding is not None:
                batch = {
                    k: jax.make_array_from_process_local_data(
                        sharding, v, (self.global_batch,) + v.shape[1:]
                    )
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


def _check_count(cfg, role: str, num_examples: int) -> None:
    """Warns when `examples_per_subset` (DMVR configs) disagrees with the records."""
    if cfg.examples_per_subset is None:
        return
    name = {"train": cfg.train_split, "eval": cfg.eval_split, "test": cfg.test_split}[role]
    expected = cfg.examples_per_subset.get(name)
    if expected is not None and int(expected) != num_examples:
        logging.warning(
            "dataset_configs.examples_per_subset[%r]=%s but the records hold %d examples; "
            "using %d.",
            name,
            expected,
            num_examples,
            num_examples,
        )


def _seed(config) -> int:
    for key in ("rng_seed", "seed"):
        if key in config and config[key] is not None:
            return int(config[key]) & 0x7FFFFFFF
    return 0


def get_dataset(
    config, *, mesh=None, start_step: int = 0, process_index=None, process_count=None
) -> Dataset:
    """Builds the train, eval and test input pipelines for `config`.

    Reads: `config.dataset_name` (a TFDS name such as 'moving_shapes', 'moving_shapes/tiny',
    'kinetics400', 'kinetics400/short256', 'something_something_v2', or
    'video_tfrecord_dataset' for DMVR records), `config.dataset_configs` (keys and defaults in
    `default_dataset_configs()`), `config.batch_size` (global train batch),
    `config.eval_batch_size` (global eval batch; default batch_size), `config.rng_seed`
    (or `config.seed`; default 0).

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
    batch_size = int(config.batch_size)
    eval_batch_size = int(config.eval_batch_size) if config.get("eval_batch_size") else batch_size
    test_batch_size = int(cfg.test_batch_size or eval_batch_size)
    for key, value in (
        ("batch_size", batch_size),
        ("eval_batch_size", eval_batch_size),
        ("dataset_configs.test_batch_size", test_batch_size),
    ):
        if value < 1:
            raise ValueError(f"config.{key}={value} must be >= 1.")
    if start_step < 0:
        raise ValueError(f"start_step={start_step} must be >= 0.")
    seed = _seed(config)
    factories, class_names, num_classes = open_split_sources(dataset_name, cfg)
    flip = _flip_default(dataset_name, cfg)
    batches = {"train": batch_size, "eval": eval_batch_size, "test": test_batch_size}
    keys = {
        "train": "batch_size",
        "eval": "eval_batch_size",
        "test": "dataset_configs.test_batch_size",
    }
    rows = {
        role: local_rows(batches[role], mesh, process_index, process_count, f"config.{keys[role]}")
        for role in batches
    }
    splits: dict[str, _Split] = {}

    def split(role):
        if role not in splits:
            splits[role] = _Split(
                factories[role](),
                role,
                cfg,
                seed,
                num_classes,
                batches[role],
                rows[role],
                flip,
                mesh,
            )
        return splits[role]

    def count(role):
        try:
            source = split(role)
        except SplitNotFoundError:
            return 0
        if role != "train" and source.num_examples and _unlabelled(source.fetcher.source):
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

    def train_iter():
        gen = split("train").iterate(start_step)
        try:
            yield from gen
        finally:
            gen.close()

    views = cfg.num_test_clips * (3 if cfg.do_three_spatial_crops else 1)
    c = cfg.crop_size
    onehot = bool(cfg.one_hot_labels or cfg.multi_label)
    meta = {
        "num_classes": num_classes,
        "class_names": class_names,
        "num_train_examples": count("train"),
        "num_eval_examples": count("eval"),
        "num_test_examples": count("test"),
        "input_shape": (cfg.num_frames, c, c, 3),
        "test_input_shape": (views, cfg.num_frames, c, c, 3),
        "num_test_views": views,
        "target_is_onehot": onehot,
        "input_dtype": np.float32,
    }
    meta["num_eval_steps"] = math.ceil(meta["num_eval_examples"] / eval_batch_size)
    meta["num_test_steps"] = math.ceil(meta["num_test_examples"] / test_batch_size)
    return Dataset(
        train_iter=train_iter(),
        valid_iter=lambda: split("eval").iterate(),
        test_iter=lambda: split("test").iterate(),
        meta_data=meta,
    )
