"""Every experiment config under configs/ loads, completes, and builds its model (shapes only).

Configs are loaded by path, as `--config=configs/<file>.py:<arg>` does, so the try/except import
fallback in each file is exercised too. Models are built with `jax.eval_shape(model.init, ...)`:
no parameter is allocated, so ViViT-L and -H take seconds.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from vivit_jax import config_lib
from vivit_jax.models import create_model, validate_input_shape

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")

# Arguments to test per file (None = no colon); files not listed are tested without one.
DMVR = [None, "dmvr"]
ARGS = {
    "demo.py": [None, "single_frame", "tiny", "tiny,single_frame"],
    "kinetics400/vivit_base_k400.py": DMVR,
    "kinetics400/vivit_base_factorised_encoder.py": DMVR,
    "kinetics400/vivit_large_factorised_encoder.py": DMVR,
    "kinetics400/vivit_huge_k400.py": DMVR,
    "kinetics400/vivit_base_factorised_self_attention.py": DMVR,
    "kinetics400/vivit_base_factorised_dot_product.py": DMVR,
    "kinetics400/vivit_base_average_pool_baseline.py": DMVR,
    "kinetics400/vivit_base_embedding_ablation.py": [
        "central_frame",
        "filter_inflation",
        "random_init",
        "uniform_frame_sampling",
        "uniform_frame_sampling,dmvr",
    ],
    "kinetics600/vivit_large_factorised_encoder.py": DMVR,
    "something_something_v2/vivit_large_factorised_encoder.py": DMVR,
    "moments_in_time/vivit_large_factorised_encoder.py": [None, "dmvr"],
    "epic_kitchens/vivit_large_factorised_encoder.py": [None, "dmvr"],
}

# Parameter counts: (exact count from the shapes, paper's millions or None, tolerance in M).
# Table 2 prints 88.954 M and 88.952 M as "88.9" (truncated), hence the 0.06 tolerance.
PARAMS = {
    "kinetics400/vivit_base_k400.py": (88_954_000, 88.9, 0.06),
    "kinetics400/vivit_base_factorised_encoder.py": (115_062_928, 115.1, 0.06),
    "kinetics400/vivit_base_factorised_self_attention.py": (117_319_312, 117.3, 0.06),
    "kinetics400/vivit_base_factorised_dot_product.py": (88_952_464, 88.9, 0.06),
    "kinetics400/vivit_base_average_pool_baseline.py": (86_696_080, 86.7, 0.06),
    "kinetics400/vivit_base_embedding_ablation.py:central_frame": (88_954_000, 88.9, 0.06),
    "kinetics400/vivit_base_embedding_ablation.py:filter_inflation": (88_954_000, 88.9, 0.06),
    "kinetics400/vivit_base_embedding_ablation.py:random_init": (88_954_000, 88.9, 0.06),
    # 16 sampled frames with a 2D patch kernel: the tubelet kernel's second frame fewer.
    "kinetics400/vivit_base_embedding_ablation.py:uniform_frame_sampling": (
        88_954_000 - 16 * 16 * 3 * 768,
        None,
        0,
    ),
    "kinetics400/vivit_large_factorised_encoder.py": (606_827_920, None, 0),
    "kinetics400/vivit_huge_k400.py": (636_945_040, None, 0),
    "kinetics600/vivit_large_factorised_encoder.py": (607_032_920, None, 0),
    "something_something_v2/vivit_large_factorised_encoder.py": (354_733_230, None, 0),
    "moments_in_time/vivit_large_factorised_encoder.py": (354_840_915, None, 0),
}


def config_files() -> list[str]:
    paths = glob.glob(os.path.join(CONFIGS, "**", "*.py"), recursive=True)
    names = [os.path.relpath(p, CONFIGS) for p in paths]
    return sorted(n for n in names if os.path.basename(n) not in ("__init__.py", "common.py"))


def cases() -> list[tuple[str, str | None]]:
    return [(name, arg) for name in config_files() for arg in ARGS.get(name, [None])]


def case_id(case) -> str:
    name, arg = case
    return name if arg is None else f"{name}:{arg}"


def load(name: str, arg: str | None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of configs/<name>, loaded by path like `--config=configs/<name>:<arg>`."""
    path = os.path.join(CONFIGS, name)
    module_name = "config_under_test_" + name.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def num_params(config: ml_collections.ConfigDict) -> int:
    num_classes = config.dataset_configs.num_classes or 8
    model = create_model(config.model, num_classes, dtype=config.model_dtype_str)
    ds = config.dataset_configs
    video = jax.ShapeDtypeStruct((1, ds.num_frames, ds.crop_size, ds.crop_size, 3), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    shapes = jax.eval_shape(lambda v: model.init(rngs, v, train=False), video)
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


def test_every_paper_config_is_listed():
    files = set(config_files())
    missing = sorted(set(ARGS) - files)
    assert not missing, f"configs listed in ARGS but absent: {missing}"


@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_config_completes_and_model_builds(case):
    name, arg = case
    config = config_lib.complete_config(load(name, arg))
    ds = config.dataset_configs
    validate_input_shape(config.model, (ds.num_frames, ds.crop_size, ds.crop_size, 3))
    if arg and "dmvr" in arg.split(","):
        assert config.dataset_name == "video_tfrecord_dataset"
        assert ds.tables and ds.examples_per_subset and ds.num_classes
        return  # Same model as the TFDS variant.
    key = case_id(case) if case_id(case) in PARAMS else name
    count = num_params(config)
    if key in PARAMS:
        exact, paper_m, tol = PARAMS[key]
        assert count == exact
        if paper_m is not None:
            assert abs(count / 1e6 - paper_m) < tol


def test_paper_recipes():
    k400 = config_lib.complete_config(load("kinetics400/vivit_base_k400.py", None))
    assert (k400.optimizer, k400.optimizer_configs.momentum, k400.batch_size) == (
        "momentum",
        0.9,
        64,
    )
    assert k400.lr_configs.base_learning_rate == 0.1
    assert k400.lr_configs.warmup_steps == int(2.5 * (214_834 // 64))
    assert k400.num_training_epochs == 30 and k400.max_grad_norm == 1.0
    assert k400.dataset_name == "kinetics400"
    assert k400.init_from.checkpoint_path.endswith("ViT-B_16.npz")
    ssv2 = config_lib.complete_config(
        load("something_something_v2/vivit_large_factorised_encoder.py", None)
    )
    assert ssv2.lr_configs.base_learning_rate == 0.5 and ssv2.num_training_epochs == 35
    assert (ssv2.label_smoothing, ssv2.mixup.alpha, ssv2.model.stochastic_droplayer_rate) == (
        0.3,
        0.3,
        0.3,
    )
    assert ssv2.model.temporal_transformer.num_layers == 4
    assert ssv2.dataset_configs.random_flip is False
    assert ssv2.init_from.positional_embed_size_change == "resize"
    k600 = config_lib.complete_config(load("kinetics600/vivit_large_factorised_encoder.py", None))
    assert k600.lr_configs.base_learning_rate == 0.1
    assert k600.lr_configs.warmup_steps == int(2.5 * (363_213 // 64))
    assert k600.model.temporal_transformer.num_layers == 24
    assert k600.dataset_configs.num_classes == 600 and k600.dataset_name == "kinetics600"
    mit = config_lib.complete_config(
        load("moments_in_time/vivit_large_factorised_encoder.py", None)
    )
    assert (mit.lr_configs.base_learning_rate, mit.num_training_epochs) == (0.25, 10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="known: dmvr"):
        load("kinetics400/vivit_base_k400.py", "dmrv")
    with pytest.raises(ValueError, match="exactly one of"):
        load("kinetics400/vivit_base_embedding_ablation.py", None)
    with pytest.raises(ValueError, match="exactly one of"):
        load("kinetics400/vivit_base_embedding_ablation.py", "random_init,filter_inflation")


def test_command_line_loading_with_arg_and_override():
    """`--config=file.py:dmvr --config.key=value`, parsed by ml_collections as `main` does."""
    path = os.path.join(CONFIGS, "kinetics600", "vivit_large_factorised_encoder.py")
    argv = ["prog", f"--config={path}:dmvr", "--config.dataset_configs.base_dir=/data/k600"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
    )
    fv(argv)
    config = config_lib.complete_config(fv.config)
    assert config.dataset_configs.base_dir == "/data/k600"
    assert config.dataset_configs.tables["train"] == "train.tfrecord@1024"


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if hasattr(value, "items"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def scenic_vivit_base_k400() -> ml_collections.ConfigDict:
    """Scenic's `kinetics400/vivit_base_k400.py`, every key and value as the original sets them
    (re-typed as data; its learning-rate maths evaluated)."""
    steps_per_epoch = 214_834 // 64
    return ml_collections.ConfigDict(
        {
            "experiment_name": "vivit_base_kinetics400_im21k",
            "dataset_name": "video_tfrecord_dataset",
            "datset_configs": {},  # The original's typo, an empty dict.
            "data_dtype_str": "float32",
            "dataset_configs": {
                "base_dir": "/path/to/dataset",
                "tables": {
                    "train": "train.tfrecord@1024",
                    "validation": "validation.tfrecord@1024",
                    "test": "test.tfrecord@1024",
                },
                "examples_per_subset": {"train": 214_834, "validation": 17_637, "test": 34_579},
                "num_classes": 400,
                "num_frames": 32,
                "stride": 2,
                "min_resize": 256,
                "crop_size": 224,
                "one_hot_labels": True,
                "zero_centering": True,
                "do_multicrop_test": True,
                "log_test_epochs": 5,
                "num_test_clips": 4,
                "test_batch_size": 8,
                "do_three_spatial_crops": True,
                "augmentation_params": {
                    "do_jitter_scale": True,
                    "scale_min_factor": 0.9,
                    "scale_max_factor": 1.33,
                    "prob_scale_jitter": 1.0,
                    "do_color_augment": True,
                    "prob_color_augment": 0.8,
                    "prob_color_drop": 0.1,
                },
                "prefetch_to_device": 2,
            },
            "multicrop_clips_per_device": 2,
            "model_name": "vivit_classification",
            "model": {
                "attention_config": {"type": "spacetime"},
                "hidden_size": 768,
                "patches": {"size": (16, 16, 2)},
                "num_heads": 12,
                "mlp_dim": 3072,
                "num_layers": 12,
                "representation_size": None,
                "classifier": "token",
                "attention_dropout_rate": 0.0,
                "dropout_rate": 0.0,
                "temporal_encoding_config": {
                    "method": "3d_conv",
                    "kernel_init_method": "central_frame_initializer",
                },
            },
            "model_dtype_str": "float32",
            "trainer_name": "vivit_trainer",
            "optimizer": "momentum",
            "optimizer_configs": {},
            "l2_decay_factor": 0,
            "max_grad_norm": 1,
            "label_smoothing": None,
            "num_training_epochs": 30,
            "batch_size": 64,
            "rng_seed": 0,
            "init_from": {
                "model_config": {"model": {"classifier": "token"}},
                "checkpoint_path": "path_to_checkpoint_of_vit_b_16",
                "checkpoint_format": "scenic",
                "restore_positional_embedding": True,
                "restore_input_embedding": True,
                "positional_embed_size_change": "tile",
            },
            "lr_configs": {
                "learning_rate_schedule": "compound",
                "factors": "constant * cosine_decay * linear_warmup",
                "warmup_steps": int(2.5 * steps_per_epoch),
                "steps_per_cycle": 30 * steps_per_epoch,
                "base_learning_rate": 1e-1,
            },
            "write_summary": True,
            "checkpoint": True,
            "debug_train": False,
            "debug_eval": False,
        }
    )


def test_vivit_base_k400_matches_scenic_original():
    """Ours with `:dmvr` equals Scenic's config but for the documented differences."""
    scenic = _flatten(config_lib.complete_config(scenic_vivit_base_k400()))
    ours = _flatten(config_lib.complete_config(load("kinetics400/vivit_base_k400.py", "dmvr")))
    expected = {
        "experiment_name",
        "init_from.checkpoint_path",  # A ViT .npz placeholder instead of Scenic's.
        "init_from.checkpoint_format",  # 'auto' reads .npz, big_vision and Scenic files.
        "lr_configs.steps_per_cycle",  # None = the run's total steps, whatever the data size.
        "l2_decay_factor",  # Scenic's 0, ours None: no L2 term either way.
    }
    differ = {k for k in scenic.keys() | ours.keys() if scenic.get(k) != ours.get(k)}
    assert differ == expected, {k: (scenic.get(k), ours.get(k)) for k in differ ^ expected}


def _shapes_tree(model, video_shape) -> dict:
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    video = jax.ShapeDtypeStruct(video_shape, jnp.float32)
    shapes = jax.eval_shape(lambda v: model.init(rngs, v, train=False), video)["params"]
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), shapes)


def _narrow(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config's model with its token grids, but 32 wide and 1 layer deep (cheap to fill)."""
    m = ml_collections.ConfigDict(model_config.to_dict())
    m.hidden_size, m.num_heads, m.mlp_dim, m.num_layers = 32, 2, 64, 1
    m.spatial_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    m.temporal_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    return m


def init_cases():
    out = []
    for case in cases():
        name, arg = case
        if name == "demo.py" or (arg and "dmvr" in arg.split(",")):
            continue
        out.append(pytest.param(case, id=case_id(case)))
    return out


@pytest.mark.parametrize("case", init_cases())
def test_initialisation_from_an_image_vit_fits(case):
    """`config.init_from` turns an image ViT of the right patch size into the config's model."""
    from vivit_jax.checkpoints import init_from_pretrained

    config = config_lib.complete_config(load(*case))
    model_config = _narrow(config.model)
    ph, pw = tuple(model_config.patches.size)[:2]
    image = ml_collections.ConfigDict(model_config.to_dict())
    image.attention_config.update(type="spacetime", spatial_only_baseline=False)
    image.classifier = "token"
    image.patches.size = (ph, pw)
    image.temporal_encoding_config.update(method="temporal_sampling", n_sampled_frames=1)
    vit = _shapes_tree(create_model(image, 10), (1, 1, 224, 224, 3))  # ViT's 224² pretraining.
    ds = config.dataset_configs
    target = _shapes_tree(
        create_model(model_config, ds.num_classes),
        (1, ds.num_frames, ds.crop_size, ds.crop_size, 3),
    )
    narrowed = ml_collections.ConfigDict({"model": model_config, "init_from": config.init_from})
    new = init_from_pretrained(
        target, narrowed, restored=vit, input_shape=(ds.num_frames, ds.crop_size, ds.crop_size)
    )
    same = jax.tree_util.tree_map(lambda a, b: np.shape(a) == np.shape(b), new, target)
    assert all(jax.tree_util.tree_leaves(same))
