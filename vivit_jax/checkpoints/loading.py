"""Reading a trained model's parameters for evaluation, prediction and export: from any
checkpoint the readers take (`formats.load_params`), or the latest of a workdir; checked
against the model they are for.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import ml_collections
import numpy as np
from absl import logging

from vivit_jax.checkpoints import trees
from vivit_jax.checkpoints.describe import infer_model_config
from vivit_jax.checkpoints.formats import detect_format, load_params
from vivit_jax.checkpoints.huggingface import load_huggingface_vivit, read_config
from vivit_jax.checkpoints.orbax_io import orbax_steps
from vivit_jax.checkpoints.train_state import checkpoint_dir
from vivit_jax.checkpoints.trees import CheckpointError


@dataclasses.dataclass
class Checkpoint:
    """Parameters read from disk, and where from.

    Attributes:
      path: What was read.
      format: 'orbax', 'scenic', 'huggingface', ...
      step: The training step, when the path says it, else None.
      params: Nested dict of numpy arrays (Scenic layout).
      model_config: The HuggingFace directory's `config.model`, else None.
      class_names: The HuggingFace `id2label` names, else None.
    """

    path: str
    format: str
    step: int | None
    params: dict
    model_config: ml_collections.ConfigDict | None = None
    class_names: list[str] | None = None


def load_checkpoint(checkpoint: str | None, workdir: str | None = None) -> Checkpoint:
    """Reads `checkpoint` (any supported format), else the latest one in `workdir`.

    Raises:
      FileNotFoundError: neither is given or holds a checkpoint.
      vivit_jax.checkpoints.CheckpointError: an unreadable checkpoint.
    """
    if not checkpoint:
        directory = checkpoint_dir(workdir) if workdir else None
        steps = orbax_steps(directory) if directory and os.path.isdir(directory) else []
        if not steps:
            raise FileNotFoundError(
                f"No checkpoint to evaluate: {directory or 'no workdir'} holds none. Train "
                "first, or pass --checkpoint=<Scenic/orbax checkpoint or HuggingFace directory>."
            )
        checkpoint = os.path.join(directory, str(steps[-1]))
    fmt, path = detect_format(os.fspath(checkpoint))
    if fmt == "huggingface":
        model_config, _, params = load_huggingface_vivit(path)
        id2label = read_config(path).get("id2label") or {}
        names = [str(id2label.get(str(i), i)) for i in range(len(id2label))]
        if all(re.fullmatch(r"LABEL_\d+", n) for n in names):
            names = None
        return Checkpoint(path, fmt, None, params, model_config, names or None)
    if fmt == "orbax" and not os.path.basename(os.path.normpath(path)).isdigit():
        steps = _steps(path) or _steps(os.path.join(path, "checkpoints"))
        if steps:  # A workdir or manager directory: name the step actually read.
            base = path if _steps(path) else os.path.join(path, "checkpoints")
            path = os.path.join(base, str(steps[-1]))
    match = re.search(r"(?:checkpoint_)?(\d+)$", os.path.basename(os.path.normpath(path)))
    step = int(match.group(1)) if match else None
    return Checkpoint(path, fmt, step, load_params(path, fmt))


def _steps(directory: str) -> list[int]:
    return orbax_steps(directory) if os.path.isdir(directory) else []


def with_checkpoint_model(config, ckpt: Checkpoint):
    """`config` with a HuggingFace checkpoint's architecture as `config.model` (else unchanged).

    Raises:
      ValueError: the config asks for a variant other than Model 1 ('spacetime').
    """
    if ckpt.model_config is None:
        return config
    wanted = config.model.attention_config.type
    if wanted != "spacetime":
        raise ValueError(
            f"{ckpt.path} is a HuggingFace ViViT (Model 1, 'spacetime'), but "
            f"config.model.attention_config.type={wanted!r}; use a Model 1 config."
        )
    old, new = config.model.to_dict(), ckpt.model_config.to_dict()
    for d in (old, new):  # Initialisation only: not the checkpoint's business.
        d.get("temporal_encoding_config", {}).pop("kernel_init_method", None)
    changed = sorted(
        k
        for k in new
        if k not in ("dropout_rate", "attention_dropout_rate") and old.get(k) != new[k]
    )
    if changed:
        logging.warning(
            "The HuggingFace checkpoint's architecture replaces config.model keys %s.", changed
        )
    config = ml_collections.ConfigDict(config)  # A copy; the caller's config is left alone.
    with config.ignore_type():
        config.model = ckpt.model_config
    return config


def fit_params(params: dict, abstract_params, num_classes: int) -> dict:
    """`params` checked against the model's (shape-only) parameters, cast to their dtypes.

    Raises:
      vivit_jax.checkpoints.CheckpointError: naming missing / unexpected parameters or both
        shapes of a mismatch, with the `config.model` the checkpoint's shapes imply.
    """
    want = trees.flatten(abstract_params)
    have = trees.flatten(params)
    problems = [f"missing {trees.path_str(p)}" for p in sorted(set(want) - set(have))]
    problems += [f"unexpected {trees.path_str(p)}" for p in sorted(set(have) - set(want))]
    problems += [
        f"{trees.path_str(p)}: checkpoint {tuple(np.shape(have[p]))} vs model {tuple(w.shape)}"
        for p, w in sorted(want.items())
        if p in have and tuple(np.shape(have[p])) != tuple(w.shape)
    ]
    if problems:
        try:
            implied = json.dumps(infer_model_config(params).to_dict(), default=list)
        except Exception:  # noqa: BLE001 - only a hint.
            implied = "(could not be inferred)"
        more = f"; ... ({len(problems)} in all)" if len(problems) > 8 else ""
        raise CheckpointError(
            f"The checkpoint does not fit config.model with {num_classes} classes and this "
            f"input size: {'; '.join(problems[:8])}{more}. The checkpoint's shapes imply "
            f"config.model = {implied}."
        )
    return trees.unflatten({p: np.asarray(have[p], w.dtype) for p, w in want.items()})
