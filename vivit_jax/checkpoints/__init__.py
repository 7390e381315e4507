"""Checkpoints: read ViT / big_vision / Scenic / orbax / HuggingFace files; inflate; convert.

Public API:
  load_params(path, format=None)             -> nested dict of numpy arrays, Scenic layout;
                                                `path` may be relative, or `file.npz:img`
  load_huggingface_vivit(directory)          -> (model_config, num_classes, params)
  export_huggingface_vivit(params, model_config, directory, num_frames=, image_size=)
  save_params_orbax(directory, params, step, overwrite=False)
                                             -> writes the training code's orbax layout;
                                                returns the step directory
  init_from_pretrained(params, config)       -> params initialised per config.init_from
  inflate_params(target, restored, model_config, init_from) -> (params, changes)
  default_init_from_config()                 -> every config.init_from key with its default
  infer_model_config(params)                 -> the config.model keys a tree's shapes imply
  CheckpointError                            -> raised for unreadable / mismatched checkpoints

Command line: `python -m vivit_jax.checkpoints.convert --help`.
"""

from vivit_jax.checkpoints.describe import infer_model_config
from vivit_jax.checkpoints.formats import detect_format, load_params, save_params_orbax
from vivit_jax.checkpoints.huggingface import export_huggingface_vivit, load_huggingface_vivit
from vivit_jax.checkpoints.inflate import (
    Change,
    describe_checkpoint,
    format_changes,
    inflate_params,
)
from vivit_jax.checkpoints.init_from import (
    default_init_from_config,
    init_from_pretrained,
    resolve_init_from,
)
from vivit_jax.checkpoints.trees import CheckpointError

__all__ = [
    "Change",
    "CheckpointError",
    "default_init_from_config",
    "describe_checkpoint",
    "detect_format",
    "export_huggingface_vivit",
    "format_changes",
    "infer_model_config",
    "inflate_params",
    "init_from_pretrained",
    "load_huggingface_vivit",
    "load_params",
    "resolve_init_from",
    "save_params_orbax",
]
