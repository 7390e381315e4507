"""TrainState and the pure `train_step` / `eval_step`.

Both are top-level functions of arrays; everything static (the model, the optimiser, the loss
settings) is bound with `functools.partial` before `jax.jit`, which `train.py` does once, with
explicit shardings and the state donated. The step's randomness is `fold_in(rng, state.step)`, so
a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from vivit_jax import losses
from vivit_jax.data import augment as augment_lib
from vivit_jax.metrics import EvalMetrics, TrainMetrics, argmax_correct, top_k_correct


@flax.struct.dataclass
class TrainState:
    """What a checkpoint holds (orbax item `state`).

    Attributes:
      step: Number of optimiser steps taken (int32 scalar).
      params: Model parameters, the Flax tree `model.init(...)['params']`.
      opt_state: The optax state.
    """

    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The static settings of the train step, read from the experiment config.

    Attributes:
      num_classes: Output classes (targets are one-hot over these).
      multilabel: Sigmoid cross-entropy instead of softmax.
      label_smoothing: Scenic's label smoothing, or None.
      mixup_alpha: Mixup's Beta parameter; 0 or None turns it off.
      l2_decay_factor: Adds `0.5 * f * |params|^2` to the loss, or None.
      grad_accum_steps: Micro-batches per step (gradients summed).
      batch_sharding: Sharding of a batch's leading axis inside the step, or None.
      class_splits: Head sizes of the multi-head model (loss = mean of the heads' losses,
        accuracy = every head right), or None.
      augment: What the step does to its uint8 inputs: normalisation, colour jitter,
        RandAugment (`vivit_jax.data.augment`).
    """

    num_classes: int
    multilabel: bool = False
    label_smoothing: float | None = None
    mixup_alpha: float | None = None
    l2_decay_factor: float | None = None
    grad_accum_steps: int = 1
    batch_sharding: NamedSharding | None = None
    class_splits: tuple[int, ...] | None = None
    augment: augment_lib.Augment = augment_lib.Augment()

    @classmethod
    def from_config(cls, config, num_classes: int, batch_sharding=None) -> LossConfig:
        return cls(
            num_classes=num_classes,
            multilabel=config.model_name == "vivit_multilabel_classification",
            label_smoothing=config.label_smoothing,
            mixup_alpha=config.mixup.alpha,
            l2_decay_factor=config.l2_decay_factor,
            grad_accum_steps=config.grad_accum_steps,
            batch_sharding=batch_sharding,
            class_splits=tuple(config.dataset_configs.class_splits)
            if config.model_name == "vivit_multihead_classification"
            else None,
            augment=augment_lib.Augment.from_config(config.dataset_configs),
        )


def _constrain(x: jax.Array, sharding: NamedSharding | None) -> jax.Array:
    if sharding is None:
        return x
    return jax.lax.with_sharding_constraint(x, sharding)


def _micro_batches(x: jax.Array, n: int, sharding: NamedSharding | None) -> jax.Array:
    """`[B, ...]` → `[n, B/n, ...]`; micro-batch i holds rows i, i+n, ... so that every device
    keeps its share of each micro-batch."""
    b = x.shape[0]
    x = x.reshape((b // n, n) + x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    if sharding is not None:
        micro = NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))
        x = jax.lax.with_sharding_constraint(x, micro)
    return x


def _gradients(grad_fn, params, batch, key, c: LossConfig):
    """`(loss, logits, grads)` over the whole batch, in `c.grad_accum_steps` micro-batches."""
    if c.grad_accum_steps == 1:
        (loss, logits), grads = grad_fn(params, *batch, key)
        return loss, logits, grads
    n = c.grad_accum_steps
    micro = [_micro_batches(a, n, c.batch_sharding) for a in batch]
    keys = jax.random.split(key, n)

    def accumulate(grads_sum, xs):
        x, y, m, k = xs
        (loss, logits), grads = grad_fn(params, x, y, m, k)
        return jax.tree.map(jnp.add, grads_sum, grads), (loss, logits)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (loss, logits) = jax.lax.scan(accumulate, zeros, (*micro, keys))
    # Back to the batch order: row j*n + i came from micro-batch i, position j.
    logits = jnp.swapaxes(logits, 0, 1).reshape((-1,) + logits.shape[2:])
    return jnp.sum(loss), logits, grads


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule,
    loss_config: LossConfig,
) -> tuple[TrainState, TrainMetrics]:
    """One optimiser step on `batch` (`inputs` uint8 clips or normalised floats, `label`,
    `batch_mask`): device augmentation (`loss_config.augment`), mixup, the loss, the update.

    Args:
      state: The train state (donated by the caller's jit).
      batch: Global batch; `label` int `[B]` or float `[B, C]`.
      rng: The run's base key; this step uses `fold_in(rng, state.step)` (augmentation, mixup,
        dropout).
      model: The Flax module.
      tx: The optax transformation (including clipping).
      schedule: step → learning rate, for logging.
      loss_config: Static loss settings.

    Returns:
      `(new_state, metrics)`.
    """
    c = loss_config
    rng = jax.random.fold_in(rng, state.step)
    mixup_rng, dropout_rng = jax.random.split(rng)
    inputs = augment_lib.augment_batch(
        _constrain(batch["inputs"], c.batch_sharding), jax.random.fold_in(rng, 0xA06), c.augment
    )
    mask = _constrain(batch["batch_mask"].astype(jnp.float32), c.batch_sharding)
    targets = losses.targets_from_labels(batch["label"], c.num_classes)
    if c.mixup_alpha:
        inputs, targets = losses.mixup(inputs, targets, mixup_rng, c.mixup_alpha)
    train_targets = losses.smooth_labels(targets, c.label_smoothing, c.class_splits)
    denominator = jnp.maximum(jnp.sum(mask), 1.0)

    def loss_fn(params, x, y, m, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        per_example = losses.per_example_loss(logits, y, c.multilabel, c.class_splits)
        loss = jnp.sum(per_example * m) / denominator
        return loss, logits

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    loss, logits, grads = _gradients(
        grad_fn, state.params, (inputs, train_targets, mask), dropout_rng, c
    )

    if c.l2_decay_factor:
        l2_loss, l2_grads = jax.value_and_grad(losses.l2_regularization)(state.params)
        loss = loss + 0.5 * c.l2_decay_factor * l2_loss
        grads = jax.tree.map(lambda g, r: g + 0.5 * c.l2_decay_factor * r, grads, l2_grads)

    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = TrainMetrics.from_step(
        loss=loss,
        correct=argmax_correct(logits, targets, c.class_splits),
        mask=mask,
        grad_norm=grad_norm,
        learning_rate=schedule(state.step),
    )
    return new_state, metrics


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: nn.Module,
    loss_config: LossConfig,
) -> EvalMetrics:
    """Summed (masked) validation metrics of one batch; padding rows have `batch_mask` 0."""
    c = loss_config
    inputs = augment_lib.normalize(
        _constrain(batch["inputs"], c.batch_sharding), c.augment.zero_centering
    )
    mask = _constrain(batch["batch_mask"].astype(jnp.float32), c.batch_sharding)
    logits = model.apply({"params": state.params}, inputs, train=False)
    targets = losses.targets_from_labels(batch["label"], c.num_classes)
    return EvalMetrics.from_step(
        loss=losses.per_example_loss(logits, targets, c.multilabel, c.class_splits),
        top1=top_k_correct(logits, batch["label"], 1, c.class_splits),
        top5=top_k_correct(logits, batch["label"], 5, c.class_splits),
        mask=mask,
    )
