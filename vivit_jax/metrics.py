"""Train and evaluation metrics as `clu.metrics` collections with example masks.

Collections are built inside the jitted steps (`from_step`), merged on the host,
and `compute()`d into named floats when logged. Only `Average` and `LastValue` are used
(`clu.metrics.Std` is broken on current numpy).
"""

import flax
import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics

from vivit_jax.losses import split_heads


def _one_reduction():
    # What `Collection.single_from_model_output` sets: one (unreduced) step.
    return clu_metrics._ReductionCounter(jnp.array(1, dtype=jnp.int32))


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    """Per-step training metrics; `loss` is the mini-batch loss optimised (with regularisers)."""

    loss: clu_metrics.Average
    accuracy: clu_metrics.Average
    grad_norm: clu_metrics.Average
    learning_rate: clu_metrics.LastValue

    @classmethod
    def from_step(cls, *, loss, correct, mask, grad_norm, learning_rate) -> "TrainMetrics":
        return cls(
            _reduction_counter=_one_reduction(),
            loss=clu_metrics.Average.from_model_output(loss),
            accuracy=clu_metrics.Average.from_model_output(correct, mask=mask),
            grad_norm=clu_metrics.Average.from_model_output(grad_norm),
            learning_rate=clu_metrics.LastValue.from_model_output(learning_rate),
        )


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    """Per-example validation metrics: cross-entropy, top-1 and top-5 accuracy."""

    loss: clu_metrics.Average
    top1: clu_metrics.Average
    top5: clu_metrics.Average

    @classmethod
    def from_step(cls, *, loss, top1, top5, mask) -> "EvalMetrics":
        return cls(
            _reduction_counter=_one_reduction(),
            loss=clu_metrics.Average.from_model_output(loss, mask=mask),
            top1=clu_metrics.Average.from_model_output(top1, mask=mask),
            top5=clu_metrics.Average.from_model_output(top5, mask=mask),
        )


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int, class_splits=None) -> jax.Array:
    """1.0 where the label is among the `k` largest logits, per example `[B]`.

    Labels are int `[B]` or one-/multi-hot `[B, C]` (then: any positive class in the top k).
    `k` is capped at the number of classes. With `class_splits` (multi-head model, labels
    multi-hot over the concatenated heads) this is the joint accuracy: for k = 1 every head's
    argmax is right (EPIC-Kitchens' action accuracy); for k > 1 (two heads) the pair is among
    the k most likely pairs under the product of the heads' softmaxes, as Scenic's
    `joint_top_k`.
    """
    if class_splits:
        return _joint_top_k_correct(logits, labels, k, class_splits)
    k = min(k, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]  # [B, k]
    if labels.ndim == 1:
        return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
    hits = jnp.take_along_axis(labels, top, axis=-1) > 0
    return jnp.any(hits, axis=-1).astype(jnp.float32)


def _joint_top_k_correct(logits, labels, k: int, class_splits) -> jax.Array:
    heads = split_heads(logits, class_splits)
    label_heads = [jnp.argmax(t, axis=-1) for t in split_heads(labels, class_splits)]
    if k == 1:
        right = [jnp.argmax(lg, axis=-1) == t for lg, t in zip(heads, label_heads)]
        return jnp.all(jnp.stack(right), axis=0).astype(jnp.float32)
    if len(heads) != 2:
        raise ValueError(f"Joint top-{k} is defined for two heads, not {len(heads)}.")
    (a, b), (la, lb) = heads, label_heads
    pa = jax.nn.softmax(a.astype(jnp.float32), axis=-1)
    pb = jax.nn.softmax(b.astype(jnp.float32), axis=-1)
    pairs = (pa[:, :, None] * pb[:, None, :]).reshape(a.shape[0], -1)
    return top_k_correct(pairs, la * b.shape[-1] + lb, k)


def argmax_correct(logits: jax.Array, targets: jax.Array, class_splits=None) -> jax.Array:
    """1.0 where the argmax of the logits is the argmax of the (float) targets, per example;
    with `class_splits`, where it is so in every head."""
    if class_splits:
        pairs = zip(split_heads(logits, class_splits), split_heads(targets, class_splits))
        right = [jnp.argmax(lg, -1) == jnp.argmax(t, -1) for lg, t in pairs]
        return jnp.all(jnp.stack(right), axis=0).astype(jnp.float32)
    return (jnp.argmax(logits, -1) == jnp.argmax(targets, -1)).astype(jnp.float32)


def summarize(collection: clu_metrics.Collection, prefix: str) -> dict[str, float]:
    """`{'<prefix>/<name>': value}` floats of a (merged) collection."""
    return {f"{prefix}/{k}": float(v) for k, v in collection.compute().items()}
