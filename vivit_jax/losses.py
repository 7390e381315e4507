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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def targets_from_labels(label: jax.Array, num_classes: int) -> jax.Array:
    """Float targets `[B, C]`: one-hot for int labels `[B]`; float labels pass through."""
    if label.ndim == 1:
        return jax.nn.one_hot(label, num_classes, dtype=jnp.float32)
    return label.astype(jnp.float32)


def smooth_labels(targets: jax.Array, label_smoothing: float | None) -> jax.Array:
    if not label_smoothing:
        return targets
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


def per_example_loss(logits: jax.Array, targets: jax.Array, multilabel: bool) -> jax.Array:
    """Cross-entropy per example `[B]` (computed in float32)."""
    logits = logits.astype(jnp.float32)
    if multilabel:
        return jnp.sum(
            -targets * jax.nn.log_sigmoid(logits) - (1.0 - targets) * jax.nn.log_sigmoid(-logits),
            axis=-1,
        )
    return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def l2_regularization(params) -> jax.Array:
    """Sum of squares of every parameter."""
    return sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in jax.tree.leaves(params))
