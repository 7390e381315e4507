r"""Multi-view, per-video evaluation of a checkpoint; the `--mode=evaluate` entry point.

    python -m vivit_jax.main --mode=evaluate --config=configs/demo.py --workdir=/tmp/vivit_demo
    python -m vivit_jax.main --mode=evaluate --config=configs/kinetics400/<config>.py \
        --workdir=/tmp/k400_eval --checkpoint=/ckpt/vivit_base_k400/checkpoint \
        --config.dataset_configs.test_split=validation

The protocol is Scenic's multi-crop test, fixed. Every video of `dataset_configs.test_split`
gives `num_test_clips` evenly spaced clips × 1 central or 3 (`do_three_spatial_crops`) spatial
crops; a video's score is the mean of its views' logits (as the original) or, with
`config.multicrop_softmax_logits`, the mean of their softmax probabilities (per head for the
multi-head model, sigmoids for the multi-label one). Every video counts exactly once, on any
number of devices and with any test batch (`dataset_configs.test_batch_size`, else
`eval_batch_size`; rounded up to a multiple of the devices, the extra rows are padding with
`batch_mask` 0). The original required the test batch to equal the device count and counted
some videos twice. `config.steps_per_test` limits the number of batches (a partial result).

Views go through the model `multicrop_clips_per_device` at a time per video (bounding memory);
the averaged scores come back to the host, which tallies top-1/top-5, per-class accuracy and the
confusion matrix.

Which checkpoint: `checkpoint=` (anything `vivit_jax.checkpoints.load_params` reads: a Scenic
msgpack file or directory, an orbax workdir / step directory; or a HuggingFace ViViT directory),
else the latest checkpoint in `<workdir>/checkpoints`. A HuggingFace ViViT is Model 1; its
`config.json` defines the architecture and replaces the config's `model` keys (the changed keys
are logged); a config asking for another variant is an error. Its `id2label` names the classes
when the dataset has only indices.

Output in `<workdir>/eval/` (written by `vivit_jax.eval_results`): `<split>_results.json`,
`<split>_confusion[_<head>].png` (up to `MAX_CONFUSION_CLASSES` classes; rows = true class,
columns = predicted, row-normalised) and the counts as `<split>_confusion[_<head>].npy`. The
JSON holds:
  config, config_file, model_name, checkpoint, step, split, num_videos, num_views,
  num_test_clips, spatial_crops, averaging ('logits' | 'softmax'), top1, top5, loss,
  mean_class_top1, per_class_top1 {class name: accuracy or null}, per_class_num_videos,
  num_devices, test_batch_size, elapsed_seconds, videos_per_second, confusion_matrix (file
  names), date; for the multi-label model (`model_name='vivit_multilabel_classification'`,
  sigmoid scores) also mAP and per_class_ap {class name: average precision or null}, the
  mean over classes of each class's average precision over the videos (top-1 counts the
  video's first positive class).
For the multi-head model (EPIC-Kitchens) top1/top5 are the action (joint) accuracies, and
`heads` = {name: {top1, top5, mean_class_top1, per_class_top1, per_class_num_videos}}
replaces the top-level per-class fields.
"""

from __future__ import annotations

import datetime
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from vivit_jax import config_lib, eval_results, experiment, losses, sharding
from vivit_jax.backends import PLAIN, Backend
from vivit_jax.checkpoints.loading import (
    Checkpoint,
    fit_params,
    load_checkpoint,
    with_checkpoint_model,
)
from vivit_jax.checkpoints.train_state import checkpoint_dir
from vivit_jax.data import augment
from vivit_jax.metrics import top_k_correct
from vivit_jax.workdir import check_workdir

# ---------------------------------------------------------------------------------------------
# The jitted multi-view step.


def average_views(
    logits: jax.Array, probabilities: bool, *, multilabel: bool = False, class_splits=None
) -> jax.Array:
    """`[B, V, C]` view logits → `[B, C]` video scores: the mean of the logits, or (with
    `probabilities`) of the softmax probabilities (per head; sigmoids when `multilabel`)."""
    logits = logits.astype(jnp.float32)
    if probabilities:
        if multilabel:
            logits = jax.nn.sigmoid(logits)
        elif class_splits:
            heads = losses.split_heads(logits, class_splits)
            logits = jnp.concatenate([jax.nn.softmax(h, axis=-1) for h in heads], axis=-1)
        else:
            logits = jax.nn.softmax(logits, axis=-1)
    return jnp.mean(logits, axis=1)


def views_per_chunk(num_views: int, per_device: int) -> int:
    """The largest divisor of `num_views` that is at most `per_device`."""
    return max(k for k in range(1, min(num_views, per_device) + 1) if num_views % k == 0)


def multiview_step(params, batch, *, model, config) -> dict[str, jax.Array]:
    """Scores, loss and hits of one batch of videos `inputs` `[B, V, T, H, W, 3]` (or one view
    `[B, T, H, W, 3]`); `label`, `batch_mask` and `video_index` pass through."""
    inputs = augment.normalize(batch["inputs"], config.dataset_configs.zero_centering)
    if inputs.ndim == 5:
        inputs = inputs[:, None]
    b, v = inputs.shape[:2]
    k = views_per_chunk(v, config.multicrop_clips_per_device)
    chunks = jnp.moveaxis(inputs.reshape((b, v // k, k) + inputs.shape[2:]), 1, 0)

    def apply(chunk):  # [B, k, ...] → [B, k, C]
        flat = chunk.reshape((b * k,) + chunk.shape[2:])
        return model.apply({"params": params}, flat, train=False).reshape(b, k, -1)

    logits = jnp.moveaxis(jax.lax.map(apply, chunks), 0, 1).reshape(b, v, -1)
    multilabel = config.model_name == "vivit_multilabel_classification"
    splits = eval_results.config_class_splits(config)
    probs = bool(config.multicrop_softmax_logits)
    scores = average_views(logits, probs, multilabel=multilabel, class_splits=splits)
    label = batch["label"]
    targets = losses.targets_from_labels(label, scores.shape[-1])
    if probs:  # Cross-entropy of the averaged probabilities.
        p = jnp.clip(scores, 1e-12, 1.0)
        if multilabel:
            loss = -jnp.sum(targets * jnp.log(p) + (1 - targets) * jnp.log1p(-p + 1e-12), -1)
        else:
            loss = -jnp.sum(targets * jnp.log(p), -1) / (len(splits) if splits else 1)
        ranking = jnp.log(p)  # softmax(log p) = p: joint top-k ranks the averaged probabilities.
    else:
        loss = losses.per_example_loss(scores, targets, multilabel, splits)
        ranking = scores
    hits = {f"top{k}": top_k_correct(ranking, label, k, splits) for k in (1, 5)}
    if splits:
        for name, s, t in zip(
            eval_results.config_head_names(config),
            losses.split_heads(ranking, splits),
            losses.split_heads(targets, splits),
        ):
            for k in (1, 5):
                hits[f"{name}/top{k}"] = top_k_correct(s, t, k)
    return {
        "scores": scores,
        "loss": loss,
        "hits": hits,
        "label": label,
        "batch_mask": batch["batch_mask"],
        "video_index": batch["video_index"],
    }


def compile_multiview_step(exp):
    """`multiview_step` bound to the experiment, jitted with its shardings (results replicated,
    so that every process can read them)."""
    return jax.jit(
        functools.partial(multiview_step, model=exp.model, config=exp.config),
        in_shardings=(exp.state_shardings.params, sharding.batch_sharding(exp.mesh)),
        out_shardings=sharding.replicated(exp.mesh),
        compiler_options=exp.backend.compiler_options,
    )


# The loop, the entry points and the results files.


class EvaluationInterrupted(Exception):
    """`stop` asked the multi-view test to end before its last batch (SIGTERM)."""


# With several processes, `stop` combines their SIGTERM flags (a collective) once per this many
# test batches, and every process leaves the test at the same batch.
STOP_SYNC_BATCHES = 10


def evaluate_views(
    exp,
    params,
    *,
    checkpoint: str,
    step: int | None = None,
    class_names=None,
    step_fn=None,
    stop=None,
) -> dict[str, Any]:
    """Runs the multi-view protocol over the test split of `exp.dataset`.

    Args:
      exp: An `experiment.Experiment` (its dataset's `test_iter` yields multi-view batches).
      params: Parameters placed with `exp.state_shardings.params`.
      checkpoint: Recorded in the results.
      step: Recorded in the results.
      class_names: Overrides the dataset's class names (e.g. a HuggingFace `id2label`).
      step_fn: `compile_multiview_step(exp)`, to reuse one compilation across calls.
      stop: an object with `should_stop(sync: bool) -> bool` (the train loop's SIGTERM flag),
        asked before every batch.

    Returns:
      The results dict (see the module docstring), without the file names.

    Raises:
      RuntimeError: a video appears twice, or the split's videos were not all evaluated.
      EvaluationInterrupted: `stop` said so.
    """
    config, meta = exp.config, exp.dataset.meta_data
    names = list(class_names or meta.get("class_names") or range(exp.num_classes))
    names = [str(n) for n in names]
    tally = eval_results.Tally(config, names)
    step_fn = step_fn or compile_multiview_step(exp)
    keys = ("inputs", "label", "batch_mask", "video_index")
    start = time.monotonic()
    first_done = None
    num_views = None
    batch_size = None
    for i, batch in enumerate(exp.dataset.test_iter()):
        if config.steps_per_test and i >= config.steps_per_test:
            break
        if stop is not None and stop.should_stop(i % STOP_SYNC_BATCHES == 0):
            raise EvaluationInterrupted(f"after {i} test batches")
        shape = batch["inputs"].shape
        num_views = shape[1] if len(shape) == 6 else 1
        batch_size = shape[0]
        out = jax.device_get(step_fn(params, {k: batch[k] for k in keys}))
        tally.add(out)
        if first_done is None:
            first_done = (time.monotonic(), tally.num_videos)
    elapsed = time.monotonic() - start
    expected = meta.get("num_test_examples")
    if not config.steps_per_test and expected is not None and tally.num_videos != expected:
        raise RuntimeError(
            f"The test split has {expected} videos but {tally.num_videos} were evaluated."
        )
    if tally.num_videos == 0:
        raise ValueError(
            f"The test split {config.dataset_configs.test_split!r} yielded no video; set "
            "dataset_configs.test_split to a split with videos."
        )
    rate = None
    if first_done is not None and tally.num_videos > first_done[1]:  # Excludes compilation.
        rate = (tally.num_videos - first_done[1]) / max(time.monotonic() - first_done[0], 1e-9)
    ds = config.dataset_configs
    results = {
        "config": config.experiment_name,
        "model_name": config.model_name,
        "checkpoint": checkpoint,
        "step": step,
        "split": ds.test_split,
        "num_views": int(num_views),
        "num_test_clips": int(ds.num_test_clips),
        "spatial_crops": 3 if ds.do_three_spatial_crops else 1,
        "averaging": "softmax" if config.multicrop_softmax_logits else "logits",
        **tally.summary(),
        "num_devices": int(exp.mesh.devices.size),
        "test_batch_size": int(batch_size),
        "elapsed_seconds": elapsed,
        "videos_per_second": rate,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    results["_confusion"] = {name: head.confusion for name, head in tally.heads.items()}
    results["_class_names"] = {name: head.names for name, head in tally.heads.items()}
    return results


def round_test_batch(config, mesh):
    """A copy of `config` with the test batch rounded up to a multiple of the mesh's 'data'
    axis (`config` itself when it is one already)."""
    ds = config.dataset_configs
    batch = ds.test_batch_size or config.eval_batch_size or config.batch_size
    n = mesh.shape[sharding.DATA]
    if batch % n == 0:
        return config
    rounded = -(-batch // n) * n
    logging.info("Test batch %d → %d (a multiple of the %d devices; padded).", batch, rounded, n)
    config = config_lib.ConfigDict(config.to_dict())  # A deep copy: the caller's is unchanged.
    config.dataset_configs.test_batch_size = rounded
    return config


def evaluate(
    config,
    workdir: str,
    *,
    checkpoint: str | None = None,
    config_file: str | None = None,
    dataset_fn=None,
    backend: Backend = PLAIN,
) -> dict[str, Any]:
    """Evaluates a checkpoint with the multi-view protocol; writes `<workdir>/eval/...`.

    Args:
      config: The experiment config (completed here).
      workdir: Where the results go; its latest checkpoint is used without `checkpoint`.
      checkpoint: Any checkpoint path the readers accept, or a HuggingFace ViViT directory.
      config_file: Recorded in the results (e.g. the `--config` flag).
      dataset_fn: `(config, *, mesh, start_step) -> Dataset`; default `get_dataset`.
      backend: What the platform adds (`vivit_jax.backends.for_platform`).

    Returns:
      The results dict (as written), with `results_file`.

    Raises:
      FileNotFoundError: no checkpoint.
      vivit_jax.checkpoints.CheckpointError: the checkpoint does not fit the config.
    """
    config = config_lib.complete_config(config)
    ckpt = load_checkpoint(checkpoint, workdir)
    config = with_checkpoint_model(config, ckpt)
    check_workdir(workdir)
    mesh = sharding.create_mesh(config.sharding.model_axis_size)
    config = round_test_batch(config, mesh)
    dataset = (dataset_fn or experiment.default_dataset_fn)(config, mesh=mesh, start_step=0)
    exp = experiment.build_experiment(config, mesh=mesh, dataset=dataset, backend=backend)
    params = fit_params(ckpt.params, exp.abstract_state.params, exp.num_classes)
    params = jax.device_put(params, exp.state_shardings.params)
    del ckpt.params
    results = evaluate_views(
        exp, params, checkpoint=ckpt.path, step=ckpt.step, class_names=_names(exp, ckpt)
    )
    results["config_file"] = config_file
    return _finish(results, workdir)


def _names(exp, ckpt: Checkpoint):
    meta_names = exp.dataset.meta_data.get("class_names")
    plain = meta_names is None or list(meta_names) == [str(i) for i in range(exp.num_classes)]
    if ckpt.class_names and plain and len(ckpt.class_names) == exp.num_classes:
        return ckpt.class_names
    return None


def _finish(results, workdir: str) -> dict[str, Any]:
    path = eval_results.write_results(results, workdir)
    results = {k: v for k, v in results.items() if not k.startswith("_")}
    results["results_file"] = path
    logging.info("%s", eval_results.summary_line(results, path))
    return results


def final_evaluation(
    exp, params, workdir: str, step: int, step_fn=None, stop=None
) -> dict[str, Any] | None:
    """The end-of-training evaluation: the multi-view protocol on the test split, written as
    `evaluate` writes it. Returns None (and logs why) when the dataset has no test videos."""
    if not exp.dataset.meta_data.get("num_test_examples"):
        logging.info("No test videos (dataset_configs.test_split); no final multi-view test.")
        return None
    where = (
        os.path.join(checkpoint_dir(workdir), str(step))
        if exp.config.checkpoint
        else f"train state at step {step} (not saved)"
    )
    return _finish(
        evaluate_views(exp, params, checkpoint=where, step=step, step_fn=step_fn, stop=stop),
        workdir,
    )


def multiview_scalars(results: dict[str, Any]) -> dict[str, float]:
    """The multi-view test's headline figures as `test/...` summary scalars."""
    scalars = {f"test/{k}": results[k] for k in ("top1", "top5", "loss")}
    if results.get("mAP") is not None:
        scalars["test/mAP"] = results["mAP"]
    if results.get("mean_class_top1") is not None:
        scalars["test/mean_class_top1"] = results["mean_class_top1"]
    for name, head in results.get("heads", {}).items():
        scalars.update({f"test/{name}/{k}": head[k] for k in ("top1", "top5")})
    return scalars
