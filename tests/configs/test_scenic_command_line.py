"""Scenic's own config files on the command line: every documented key can be overridden, even
those the file does not set, and the EPIC-Kitchens config needs only its paths."""

from __future__ import annotations

import textwrap

import ml_collections
import pytest
from absl import flags

from vivit_jax import config_files, config_lib


def scenic_epic_kitchens() -> ml_collections.ConfigDict:
    """The keys and values of Scenic's `epic_kitchens/vivit_large_factorised_encoder.py` (its
    one-line syntax error fixed), re-typed as data: no `num_classes`, no `multi_label`."""
    return ml_collections.ConfigDict(
        {
            "experiment_name": "vivit_large_factorised_encoder_ek",
            "dataset_name": "video_tfrecord_dataset",
            "datset_configs": {},
            "data_dtype_str": "float32",
            "dataset_configs": {
                "base_dir": "/path/to/dataset",
                "tables": {
                    "train": "train.tfrecord@1024",
                    "validation": "validation.tfrecord@1024",
                    "test": "test.tfrecord@1024",
                },
                "examples_per_subset": {"train": 67217, "validation": 9668, "test": 9668},
                "class_splits": [300, 97],
                "split_names": ["noun", "verb"],
                "num_frames": 32,
                "stride": 1,
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
                    "do_color_augment": False,
                    "prob_color_augment": 0.8,
                    "prob_color_drop": 0.1,
                    "do_rand_augment": True,
                    "rand_augment_num_layers": 2,
                    "rand_augment_magnitude": 15,
                },
                "prefetch_to_device": 2,
            },
            "multicrop_clips_per_device": 2,
            "mixup": {"alpha": 0.1},
            "model_name": "vivit_multihead_classification",
            "model": {
                "hidden_size": 1024,
                "patches": {"size": [16, 16, 2]},
                "attention_config": {"type": "factorized_encoder"},
                "spatial_transformer": {"num_heads": 16, "mlp_dim": 4096, "num_layers": 24},
                "temporal_transformer": {"num_heads": 16, "mlp_dim": 4096, "num_layers": 4},
                "representation_size": None,
                "classifier": "token",
                "attention_dropout_rate": 0.0,
                "dropout_rate": 0.0,
                "stochastic_droplayer_rate": 0.2,
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
            "label_smoothing": 0.2,
            "num_training_epochs": 50,
            "batch_size": 64,
            "rng_seed": 0,
            "init_from": {
                "checkpoint_path": None,
                "checkpoint_format": "scenic",
                "model_config": {"model": {"classifier": "token"}},
                "restore_positional_embedding": True,
                "restore_input_embedding": True,
                "positional_embed_size_change": "tile",
            },
            "lr_configs": {
                "learning_rate_schedule": "compound",
                "factors": "constant * cosine_decay * linear_warmup",
                "warmup_steps": int(2.5 * (67217 // 64)),
                "steps_per_cycle": 50 * (67217 // 64),
                "base_learning_rate": 0.5,
            },
            "write_summary": True,
            "checkpoint": True,
            "debug_train": False,
            "debug_eval": False,
            "checkpoint_steps": 500,
            "log_summary_steps": 100,
        }
    )


@pytest.fixture
def config_file(tmp_path):
    """`config_file(function_name) -> path` of a config file returning one of the re-typed
    Scenic configs (the K400 one lives in test_paper_configs.py)."""

    def make(name: str) -> str:
        path = tmp_path / f"{name}.py"
        module = "test_paper_configs" if name == "scenic_vivit_base_k400" else __name__
        module = module.split(".")[-1]
        path.write_text(
            textwrap.dedent(
                f"""
                from tests.configs.{module} import {name}


                def get_config():
                    return {name}()
                """
            )
        )
        return str(path)

    return make


def _parse(*args) -> ml_collections.ConfigDict:
    argv = ["prog", *args]
    fv = flags.FlagValues()
    config_files.define_config_flag(flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config


def test_keys_a_scenic_file_does_not_set_can_be_overridden(config_file):
    config = _parse(
        f"--config={config_file('scenic_vivit_base_k400')}",
        "--config.num_training_steps=20",
        "--config.dataset_configs.multi_label=True",
        "--config.dataset_configs.data_dir=/data/tfds",
        "--config.model.remat=True",
    )
    assert config.num_training_steps == 20
    assert config.dataset_configs.multi_label is True
    assert config.dataset_configs.data_dir == "/data/tfds"
    assert config.model.remat is True
    assert config.num_training_epochs == 30  # The file's own keys are kept.
    complete = config_lib.complete_config(config)
    assert complete.num_training_steps == 20


def test_a_misspelt_override_is_still_refused(config_file):
    base = f"--config={config_file('scenic_vivit_base_k400')}"
    with pytest.raises(flags.IllegalFlagValueError, match="'config.num_training_steps'"):
        _parse(base, "--config.num_trainig_steps=2")
    with pytest.raises(flags.IllegalFlagValueError, match="'config.model.hidden_size'"):
        _parse(base, "--config.model.hiden_size=2")


def test_none_on_the_command_line_is_none(config_file):
    config = _parse(
        f"--config={config_file('scenic_vivit_base_k400')}",
        "--config.init_from.checkpoint_path=None",
    )
    assert config.init_from.checkpoint_path is None
    assert config_lib.complete_config(config).init_from.checkpoint_path is None


def test_scenic_epic_kitchens_config_needs_only_its_paths(config_file):
    config = _parse(
        f"--config={config_file('scenic_epic_kitchens')}",
        "--config.dataset_configs.base_dir=/data/epic",
    )
    complete = config_lib.complete_config(config)
    ds = complete.dataset_configs
    assert ds.multi_label is True and ds.num_classes == 397
    from vivit_jax.tools.summary import summarize_experiment

    narrow = config_lib.fill_defaults(scenic_epic_kitchens())
    narrow.unlock()
    narrow.model.hidden_size = 32
    narrow.model.spatial_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    narrow.model.temporal_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    narrow.dataset_configs.num_frames, narrow.dataset_configs.crop_size = 4, 32
    narrow.dataset_configs.min_resize = 32
    summary = summarize_experiment(narrow)
    assert summary.param_shapes["output_projection"]["bias"].shape == (397,)


def test_multi_label_off_for_the_multihead_model_is_refused():
    config = scenic_epic_kitchens()
    config.dataset_configs.multi_label = False
    with pytest.raises(ValueError, match="multi_label=True"):
        config_lib.complete_config(config)
