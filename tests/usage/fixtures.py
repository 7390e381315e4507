"""Tiny configs of every variant (as config files) and random checkpoints of them."""

from __future__ import annotations

import os

import jax
import numpy as np

from tests.evaluation.conftest import REPO
from vivit_jax import config_files

# name: config.model / experiment overrides on configs/demo.py:tiny (8 frames of 16×16).
VARIANTS = {
    "model1_token": {"model.classifier": "token"},
    "model1_gap": {"model.classifier": "gap"},
    "model2_token": {
        "model.attention_config.type": "factorized_encoder",
        "model.classifier": "token",
        "model.representation_size": 16,
    },
    "model3_gap": {"model.attention_config.type": "factorized_self_attention_block"},
    "model4_gap": {"model.attention_config.type": "factorized_dot_product_attention"},
    "epic_multihead": {
        "model.attention_config.type": "factorized_encoder",
        "model.classifier": "token",
        "model_name": "vivit_multihead_classification",
        "dataset_configs.class_splits": [5, 3],
        "dataset_configs.split_names": ["noun", "verb"],
    },
}
NUM_CLASSES = 8

_TEMPLATE = """import sys
sys.path.insert(0, {repo!r})
from configs import demo


def get_config(arg=None):
    config = demo.get_config("tiny")
    config.model.spatial_transformer.update(num_layers=2, num_heads=4, mlp_dim=128)
    config.model.temporal_transformer.update(num_layers=1, num_heads=4, mlp_dim=128)
    for key, value in {overrides!r}.items():
        *parents, leaf = key.split(".")
        target = config
        for p in parents:
            target = target[p]
        with target.ignore_type():
            target[leaf] = value
    return config
"""


def write_config(directory, name: str, **extra) -> str:
    """A config file `<directory>/<name>.py` of variant `name` (+ `extra` overrides)."""
    path = os.path.join(os.fspath(directory), f"{name}.py")
    with open(path, "w") as f:
        f.write(_TEMPLATE.format(repo=REPO, overrides={**VARIANTS[name], **extra}))
    return path


def load(config_path: str):
    from vivit_jax import config_lib

    return config_lib.complete_config(config_files.load_config_file(config_path))


def make_checkpoint(config_path: str, directory, seed: int = 0):
    """Random parameters (random head) of the config's model saved as an orbax workdir;
    returns (workdir, model, params)."""
    from vivit_jax.checkpoints import save_params_orbax
    from vivit_jax.models import create_model

    config = load(config_path)
    ds = config.dataset_configs
    model = create_model(config.model, NUM_CLASSES)
    x = np.zeros((1, ds.num_frames, ds.crop_size, ds.crop_size, 3), np.float32)
    init = jax.jit(lambda key: model.init(key, x, train=False))  # Eager init is slow on CPU.
    params = jax.device_get(init(jax.random.key(seed)))["params"]
    rng = np.random.default_rng(seed)
    for layer in ("output_projection", "pre_logits"):
        if layer in params:
            kernel = params[layer]["kernel"]
            params[layer]["kernel"] = rng.normal(0, 1, kernel.shape).astype(np.float32)
    workdir = os.path.join(os.fspath(directory), "work")
    save_params_orbax(os.path.join(workdir, "checkpoints"), params, 3)
    return workdir, model, params


def frames(batch: int, config, seed: int = 0) -> np.ndarray:
    """Random uint8 frames of the config's input size."""
    ds = config.dataset_configs
    shape = (batch, ds.num_frames, ds.crop_size, ds.crop_size, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def apply_fn(model):
    """`(params, x) -> model output`, jitted (op-by-op execution is slow on CPU)."""
    return jax.jit(lambda params, x: model.apply({"params": params}, x, train=False))
