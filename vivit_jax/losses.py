"""Losses, label targets and mixup, with Scenic's semantics.

- Softmax cross-entropy (`vivit_classification`) and sigmoid cross-entropy summed over classes
  (`vivit_multilabel_classification`), both averaged over the examples whose `batch_mask` is 1.
- Label smoothing: targets `onehot * (1 - s) + s / num_classes` (Scenic's `apply_label_smoothing`).
- Mixup: one `lam ~ Beta(alpha, alpha)` per batch, each example mixed with the batch reversed;
  inputs and (one-hot) targets alike (Scenic's `dataset_utils.mixup`). Scenic draws `lam` per
  device and reverses each device's slice; we draw one `lam` for the global batch and reverse it
  globally, so the result does not depend on the number of devices.
- `l2_decay_factor`: `+ 0.5 * factor * sum(p ** 2)` over all parameters, as Scenic's
  classification models do.
- Multi-head (`vivit_multihead_classification`, EPIC-Kitchens): one output layer of
  sum(class_splits) logits and a multi-hot target over the concatenated heads (one class per
  head); the loss is the mean over heads of each head's softmax cross-entropy, and label
  smoothing spreads over each head's own classes (Scenic's `ViViTMultiHeadClassificationModel`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def targets_from_labels(label: jax.Array, num_classes: int) -> jax.Array:
    """Float targets `[B, C]`: one-hot for int labels `[B]`; float labels pass through."""
    if label.ndim == 1:
        return jax.nn.one_hot(label, num_classes, dtype=jnp.float32)
    return label.astype(jnp.float32)


def split_heads(x, class_splits):
    """`[..., sum(class_splits)]` → one array per head (`[..., class_splits[i]]`), in order.

    Works on jax and numpy arrays alike.
    """
    bounds = [0]
    for n in class_splits:
        bounds.append(bounds[-1] + int(n))
    if x.shape[-1] != bounds[-1]:
        raise ValueError(
            f"The heads {tuple(class_splits)} (dataset_configs.class_splits) need "
            f"{bounds[-1]} outputs, got {x.shape[-1]}."
        )
    return [x[..., lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def smooth_labels(
    targets: jax.Array, label_smoothing: float | None, class_splits=None
) -> jax.Array:
    """Scenic's label smoothing; with `class_splits`, within each head."""
    if not label_smoothing:
        return targets
    if class_splits:
        heads = split_heads(targets, class_splits)
        return jnp.concatenate([smooth_labels(t, label_smoothing) for t in heads], axis=-1)
    num_classes = targets.shape[-1]
    return targets * (1.0 - label_smoothing) + label_smoothing / num_classes


def mixup(inputs: jax.Array, targets: jax.Array, rng: jax.Array, alpha: float):
    """Mixes each example with the reversed batch, `lam ~ Beta(alpha, alpha)`.

    Returns:
      `(mixed_inputs, mixed_targets)`.
    """
    lam = jax.random.beta(rng, alpha, alpha)
    mixed_inputs = lam * inputs + (1.0 - lam) * jnp.flip(inputs, axis=0)
    mixed_targets = lam * targets + (1.0 - lam) * jnp.flip(targets, axis=0)
    return mixed_inputs.astype(inputs.dtype), mixed_targets


def per_example_loss(
    logits: jax.Array, targets: jax.Array, multilabel: bool, class_splits=None
) -> jax.Array:
    """Cross-entropy per example `[B]` (computed in float32).

    With `class_splits` (multi-head model): the mean over heads of each head's softmax
    cross-entropy.
    """
    logits = logits.astype(jnp.float32)
    if class_splits:
        heads = zip(split_heads(logits, class_splits), split_heads(targets, class_splits))
        losses = [per_example_loss(lg, t, False) for lg, t in heads]
        return sum(losses) / len(losses)
    if multilabel:
        return jnp.sum(
            -targets * jax.nn.log_sigmoid(logits) - (1.0 - targets) * jax.nn.log_sigmoid(-logits),
            axis=-1,
        )
    return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def l2_regularization(params) -> jax.Array:
    """Sum of squares of every parameter."""
    return sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params))
