"""One example of the stream: which video, which frames, and the uint8 clip(s) with labels.

`ClipMaker(i)` maps this host's i-th element of a split to a dict of numpy arrays — `inputs`
uint8 `[T, c, c, 3]` (train, eval) or `[V, T, c, c, 3]` (test), `label`, `batch_mask`, and
`video_index` (eval/test) — as a pure function of (seed, i): see `vivit_jax.data.pipeline` for
how elements map to stream positions and global batches. Picklable, so that Grain's worker
processes can each run a copy.
"""

from __future__ import annotations

import threading

import numpy as np

from vivit_jax.data import host_ops


class LabelError(ValueError):
    """A stored label is not a class of the model; the message names the example and key."""


class CorruptVideoError(ValueError):
    """A stored video cannot be decoded. The message names the file and record; rebuild the
    dataset (`python -m vivit_jax.data.build ... --overwrite`) or remove the record."""


class ClipMaker:
    """Element i of one split on this host → one example (see the module docstring).

    Args:
      source: `get(i) -> (frames, labels, name)`, `num_examples` (`vivit_jax.data.sources`).
      mode: 'train', 'eval' or 'test'.
      cfg: The resolved `dataset_configs`.
      seed: The run's seed.
      num_classes: Classes of the model (labels outside [0, num_classes) are an error).
      global_batch: Rows of a global batch.
      rows: `(lo, hi)`: this host's rows of each global batch.
      flip: Random horizontal flips (train).
    """

    def __init__(self, source, mode, cfg, seed, num_classes, global_batch, rows, flip):
        self.source = source
        self.mode = mode
        self.cfg = cfg
        self.seed = seed
        self.num_classes = num_classes
        self.global_batch = global_batch
        self.lo, self.hi = rows
        self.flip = flip
        self.n = source.num_examples
        self.num_clips = cfg.num_test_clips if mode == "test" else 1
        self.views = self.num_clips * (3 if mode == "test" and cfg.do_three_spatial_crops else 1)
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # Where element i comes from.

    def position(self, i: int) -> int:
        """The stream position of this host's element i: its row of global batch i // rows."""
        per = self.hi - self.lo
        return (i // per) * self.global_batch + self.lo + i % per

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n)
                self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
                self._perms[epoch] = perm
            return perm

    def example_index(self, position: int) -> int:
        """Train: example `perm_epoch[p % N]`; eval/test: example p, or -1 (padding) past N."""
        if self.mode == "train":
            return int(self.permutation(position // self.n)[position % self.n])
        return position if position < self.n else -1

    # The example.

    def __call__(self, i) -> dict[str, np.ndarray]:
        position = self.position(int(i))
        index = self.example_index(position)
        if index < 0:
            return self._padding()
        frames, labels, _ = self.source.get(index)
        self._check_labels(labels, index, position)
        if len(frames) == 0:
            raise CorruptVideoError(f"{self._where(index, position)}: the video has no frames.")
        inputs = self._clip(frames, index, position)
        out = {
            "inputs": inputs,
            "label": self._targets(labels),
            "batch_mask": np.float32(1.0),
        }
        if self.mode != "train":
            out["video_index"] = np.int32(index)
        return out

    def _clip(self, frames, index: int, position: int) -> np.ndarray:
        cfg, n = self.cfg, len(frames)
        rng = np.random.default_rng([self.seed, position, 1])
        if self.mode == "train":
            indices = host_ops.train_indices(n, cfg.num_frames, cfg.stride, rng)
        elif self.mode == "eval":
            indices = host_ops.central_indices(n, cfg.num_frames, cfg.stride)
        else:
            indices = host_ops.test_indices(n, self.num_clips, cfg.num_frames, cfg.stride)
        unique, gather = np.unique(indices.reshape(-1), return_inverse=True)
        encoded = [frames[int(k)] for k in unique]
        for k, data in zip(unique, encoded):
            if not host_ops.complete_jpeg(data):
                raise CorruptVideoError(
                    f"{self._where(index, position)}: frame {int(k)} of {n} is not a complete "
                    f"JPEG ({len(data)} bytes; truncated or overwritten)."
                )
        try:
            h, w = host_ops.decode_jpeg(encoded[0]).shape[:2]
            if self.mode == "test":
                return host_ops.test_views(
                    encoded, gather, h, w, cfg, self.num_clips, cfg.do_three_spatial_crops
                )
            if self.mode == "train":
                box, flip = host_ops.train_box(
                    h, w, cfg, np.random.default_rng([self.seed, position, 2])
                )
                flip = flip and self.flip
            else:
                (box,), flip = host_ops.crop_boxes(h, w, cfg.min_resize, cfg.crop_size, 1), False
            return host_ops.cut_frames(encoded, gather, box, cfg.crop_size, flip)
        except (OSError, ValueError, RuntimeError) as e:  # The decoders' errors for bad data.
            raise CorruptVideoError(
                f"{self._where(index, position)}: a frame cannot be decoded ({e})."
            ) from None

    def _targets(self, labels) -> np.ndarray:
        cfg = self.cfg
        labels = np.asarray(labels, np.int64) - cfg.label_offset
        if cfg.multi_label:
            hot = np.zeros(self.num_classes, np.float32)
            hot[labels] = 1.0
            return hot
        if cfg.one_hot_labels:
            return np.eye(self.num_classes, dtype=np.float32)[labels[0]]
        return np.int32(labels[0])

    def _padding(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        shape = (cfg.num_frames, cfg.crop_size, cfg.crop_size, 3)
        if self.mode == "test":
            shape = (self.views,) + shape
        onehot = cfg.multi_label or cfg.one_hot_labels
        return {
            "inputs": np.zeros(shape, np.uint8),
            "label": np.zeros(self.num_classes, np.float32) if onehot else np.int32(0),
            "batch_mask": np.float32(0.0),
            "video_index": np.int32(-1),
        }

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
        if not labels and not self.cfg.multi_label:  # Multi-label: no class is a label too.
            raise LabelError(f"{self._where(index, position)}: the example has no label.")

    def _where(self, index: int, position: int) -> str:
        records = getattr(self.source, "index", None)
        where = f"example {index}"
        if hasattr(records, "location"):
            file, n = records.location(index)
            where = f"{file}, record {n} (example {index})"
        return f"{self.mode} stream position {position}: {where}"
