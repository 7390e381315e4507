"""`config.init_from`: its keys and defaults, and `init_from_pretrained`, the training entry point.

Keys (Scenic's first, then ours; defaults from `default_init_from_config()`):

  checkpoint_path: None. A file or directory `load_params` reads (relative or absolute, or
    big_vision's `file.npz:img` for one model of several); None = no initialisation.
  checkpoint_format: 'auto'. 'auto' | 'vit' | 'big_vision' | 'scenic' | 'orbax' | 'huggingface'.
  model_config: None. Scenic's description of the checkpoint's model; only
    `model_config.model.classifier` is read, and checked against the checkpoint.
  restore_positional_embedding: True. False keeps the model's initial positional embeddings.
  restore_input_embedding: True. False keeps the model's initial patch/tubelet embedding.
  positional_embed_size_change: 'resize_tile'. 'tile' repeats an image grid over time (frame
    size must match); 'resize' interpolates the grid in space, and between videos in time;
    'resize_tile' does whichever is needed. (Scenic had no default; its configs say 'tile'.)
  restore_output_projection: False. True also copies the head (same classes, e.g. evaluating
    or continuing a zoo model); otherwise `output_projection` restarts at zeros.
  temporal_attention_init: 'zero_output'. Model 3 from an image ViT: 'zero_output' zeroes only
    the temporal attention's output projection, so each block starts as the image block and all
    of its weights still learn (the paper); 'copy_spatial' copies the spatial attention (Scenic).
  checkpoint_token_grid: None. (frames, height, width) or (height, width) token grid of the
    checkpoint's positional embedding, for grids that cannot be told from shapes (non-square
    frames, frame-sampling ViViTs). None infers it.

The tubelet initialisation comes from `config.model.temporal_encoding_config.kernel_init_method`
('central_frame_initializer' or 'average_frame_initializer'), as in Scenic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ml_collections

from vivit_jax.checkpoints import formats, inflate, trees
from vivit_jax.checkpoints.trees import CheckpointError
from vivit_jax.configdicts import merge_locked


def default_init_from_config() -> ml_collections.ConfigDict:
    """Every `config.init_from` key with its default; see the module docstring."""
    return ml_collections.ConfigDict(
        {
            "checkpoint_path": None,
            "checkpoint_format": "auto",
            "model_config": None,
            "restore_positional_embedding": True,
            "restore_input_embedding": True,
            "positional_embed_size_change": "resize_tile",
            "restore_output_projection": False,
            "temporal_attention_init": "zero_output",
            "checkpoint_token_grid": None,
        }
    )


def resolve_init_from(init_from: Mapping[str, Any] | None) -> ml_collections.ConfigDict:
    """Defaults overridden by `init_from`; an unknown key is an error that names it."""
    resolved = merge_locked(
        default_init_from_config(),
        init_from,
        "config.init_from",
        free_form=("config.init_from.model_config",),
    )
    if isinstance(resolved.model_config, Mapping):
        with resolved.ignore_type():
            resolved.model_config = ml_collections.ConfigDict(resolved.model_config)
    choices = {
        "positional_embed_size_change": inflate.posemb.SIZE_CHANGES,
        "temporal_attention_init": inflate.TEMPORAL_ATTENTION_INITS,
    }
    for key, allowed in choices.items():
        if resolved[key] not in allowed:
            raise ValueError(
                f"config.init_from.{key}={resolved[key]!r}; expected one of {allowed}."
            )
    return resolved


def init_from_pretrained(
    params: Mapping[str, Any],
    config: ml_collections.ConfigDict,
    *,
    input_shape: tuple[int, int, int] | None = None,
    restored: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Initialises freshly initialised ViViT params from `config.init_from.checkpoint_path`.

    Args:
      params: the model's initial parameters (`model.init(...)['params']`).
      config: the experiment config: `config.model` and `config.init_from` are read, and
        `config.dataset_configs.{num_frames, crop_size}` if `input_shape` is not given.
      input_shape: (frames, height, width) the model sees; only needed when token grids cannot
        be told from parameter shapes.
      restored: already-loaded checkpoint parameters (skips reading `checkpoint_path`).

    Returns:
      New parameters shaped like `params`, as a plain nested dict: numpy arrays where taken
      from the checkpoint, the given arrays (untouched) where the initialisation was kept.
      Everything that was changed is logged once, as a table.

    Raises:
      FileNotFoundError, CheckpointError: as `load_params` and `inflate.inflate_params`.
    """
    init_from = resolve_init_from(config.get("init_from"))
    if set(params) == {"params"}:
        raise CheckpointError(
            "init_from_pretrained takes the parameters, model.init(...)['params'], not the "
            "variables dict {'params': ...}."
        )
    if restored is None:
        if not init_from.checkpoint_path:
            logging.info("config.init_from.checkpoint_path is empty: keeping initial parameters.")
            return trees.to_numpy_tree(params)
        restored = formats.load_params(init_from.checkpoint_path, init_from.checkpoint_format)
    if input_shape is None:
        input_shape = _input_shape_from_config(config)
    new, changes = inflate.inflate_params(
        params, restored, config.model, init_from, input_shape=input_shape
    )
    inflate.log_changes(
        changes, f"Initialised from {init_from.checkpoint_path or 'restored parameters'}:"
    )
    return new


def _input_shape_from_config(config) -> tuple[int, int, int] | None:
    data = config.get("dataset_configs") or {}
    frames, crop = data.get("num_frames"), data.get("crop_size")
    if frames and crop:
        return int(frames), int(crop), int(crop)
    return None


__all__ = [
    "CheckpointError",
    "default_init_from_config",
    "init_from_pretrained",
    "resolve_init_from",
]
