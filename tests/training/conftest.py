"""A tiny in-memory video dataset with the data package's contract, and tiny configs.

Class = direction of a bright square's motion (right, left, down, up): one frame says nothing.
Batch s of the train stream is a pure function of (seed, s), so `start_step` resumes exactly.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from vivit_jax import config_lib

# The same tiny programs are compiled again and again (straight vs resumed runs, 1 vs 8 devices);
# XLA's persistent cache, in a fresh directory per session, turns the repeats into disk reads.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="vivit_train_xla_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

T, H, W = 4, 16, 16
NUM_CLASSES = 4
MOVES = ((0, 2), (0, -2), (2, 0), (-2, 0))


def render(rng: np.random.Generator, label: int) -> np.ndarray:
    frames = np.full((T, H, W, 3), -0.8, np.float32)
    y, x = rng.integers(0, H), rng.integers(0, W)
    dy, dx = MOVES[label]
    for t in range(T):
        ys = (np.arange(4) + y + dy * t) % H
        xs = (np.arange(4) + x + dx * t) % W
        frames[t][np.ix_(ys, xs)] = 0.8
    return frames + rng.normal(0, 0.05, frames.shape).astype(np.float32)


@dataclasses.dataclass
class SyntheticDataset:
    train_iter: Any
    valid_iter: Any
    test_iter: Any
    meta_data: dict


def make_dataset(
    config, *, mesh=None, start_step=0, num_eval=12, nan_at_step=None, on_step=None
) -> SyntheticDataset:
    """Train/valid batches of `config.batch_size` / `config.eval_batch_size` videos.

    Args:
      nan_at_step: the train batch of this (1-based) step is NaN.
      on_step: called with the (1-based) step before its batch is returned.
    """
    b = config.batch_size
    eb = config.eval_batch_size or b
    seed = config.rng_seed

    def put(batch):
        if mesh is None:
            return batch
        s = NamedSharding(mesh, PartitionSpec("data"))
        return {k: jax.device_put(v, s) for k, v in batch.items()}

    def example(key):
        rng = np.random.default_rng(key)
        label = int(rng.integers(NUM_CLASSES))
        return render(rng, label), label

    def train():
        step = start_step
        while True:
            xs, ys = zip(*(example([seed, 0, step * b + i]) for i in range(b)))
            batch = {
                "inputs": np.stack(xs),
                "label": np.asarray(ys, np.int32),
                "batch_mask": np.ones(b, np.float32),
            }
            step += 1
            if on_step is not None:
                on_step(step)
            if nan_at_step == step:
                batch["inputs"][:] = np.nan
            yield put(batch)

    def valid():
        for start in range(0, num_eval, eb):
            idx = [i if i < num_eval else -1 for i in range(start, start + eb)]
            xs, ys = zip(*(example([seed, 1, max(i, 0)]) for i in idx))
            yield put(
                {
                    "inputs": np.stack(xs),
                    "label": np.asarray(ys, np.int32),
                    "batch_mask": np.asarray([i >= 0 for i in idx], np.float32),
                    "video_index": np.asarray(idx, np.int32),
                }
            )

    meta = {
        "num_classes": NUM_CLASSES,
        "class_names": ["right", "left", "down", "up"],
        "num_train_examples": 8 * b,
        "num_eval_examples": num_eval,
        "num_test_examples": 0,
        "input_shape": (T, H, W, 3),
        "target_is_onehot": False,
    }
    return SyntheticDataset(train(), valid, lambda: iter(()), meta)


def tiny_config(**overrides):
    """A seconds-long experiment on the synthetic dataset (Model 1, hidden 32, 1 layer)."""
    c = config_lib.default_config()
    c.dataset_name = "synthetic"
    m = c.model
    m.hidden_size = 32
    m.num_heads = 2
    m.mlp_dim = 64
    m.num_layers = 1
    m.patches.size = (8, 8, 2)
    m.classifier = "gap"
    m.dropout_rate = 0.0
    m.attention_dropout_rate = 0.0
    m.spatial_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    m.temporal_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    c.batch_size = 8
    c.eval_batch_size = 8
    c.optimizer = "adamw"
    c.lr_configs.base_learning_rate = 3e-3
    c.lr_configs.factors = "constant * linear_warmup"
    c.lr_configs.warmup_steps = 2
    c.max_grad_norm = 1.0
    c.num_training_steps = 6
    c.log_summary_steps = 1
    c.log_eval_steps = 3
    c.checkpoint_steps = 3
    c.write_summary = False
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        with target.ignore_type():
            target[leaf] = value
    return c


@pytest.fixture
def synthetic_dataset_fn():
    return make_dataset
