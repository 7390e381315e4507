"""config_lib: defaults in one place, unknown keys rejected by name, original configs accepted."""

import os
import subprocess
import sys

import ml_collections
import pytest

from vivit_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scenic_k400_config():
    """The keys of Scenic's `kinetics400/vivit_base_k400.py`, as the original sets them."""
    c = ml_collections.ConfigDict()
    c.experiment_name = "vivit_base_kinetics400_im21k"
    c.dataset_name = "video_tfrecord_dataset"
    c.dataset_configs = ml_collections.ConfigDict()
    c.data_dtype_str = "float32"
    c.datset_configs = ml_collections.ConfigDict()  # The original's typo.
    c.dataset_configs.base_dir = "/path/to/dataset"
    c.dataset_configs.tables = {"train": "train.tfrecord@1024", "validation": "v@1024"}
    c.dataset_configs.examples_per_subset = {"train": 214834, "validation": 17637}
    c.dataset_configs.num_classes = 400
    c.dataset_configs.num_frames = 32
    c.dataset_configs.stride = 2
    c.dataset_configs.min_resize = 256
    c.dataset_configs.crop_size = 224
    c.dataset_configs.one_hot_labels = True
    c.dataset_configs.zero_centering = True
    c.dataset_configs.do_multicrop_test = True
    c.dataset_configs.log_test_epochs = 5
    c.dataset_configs.num_test_clips = 4
    c.dataset_configs.test_batch_size = 8
    c.dataset_configs.do_three_spatial_crops = True
    c.multicrop_clips_per_device = 2
    c.dataset_configs.augmentation_params = ml_collections.ConfigDict(
        dict(do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.33)
    )
    c.dataset_configs.prefetch_to_device = 2
    c.model_name = "vivit_classification"
    c.model = ml_collections.ConfigDict()
    c.model.attention_config = ml_collections.ConfigDict(dict(type="spacetime"))
    c.model.hidden_size = 768
    c.model.patches = ml_collections.ConfigDict(dict(size=(16, 16, 2)))
    c.model.num_heads = 12
    c.model.mlp_dim = 3072
    c.model.num_layers = 12
    c.model.representation_size = None
    c.model.classifier = "token"
    c.model.attention_dropout_rate = 0.0
    c.model.dropout_rate = 0.0
    c.model_dtype_str = "float32"
    c.model.temporal_encoding_config = ml_collections.ConfigDict(
        dict(method="3d_conv", kernel_init_method="central_frame_initializer")
    )
    c.trainer_name = "vivit_trainer"
    c.optimizer = "momentum"
    c.optimizer_configs = ml_collections.ConfigDict()
    c.l2_decay_factor = 0
    c.max_grad_norm = 1
    c.label_smoothing = None
    c.num_training_epochs = 30
    c.batch_size = 64
    c.rng_seed = 0
    c.init_from = ml_collections.ConfigDict()
    c.init_from.model_config = None
    c.init_from.checkpoint_path = "path_to_checkpoint_of_vit_b_16"
    c.init_from.checkpoint_format = "scenic"
    c.init_from.model_config = ml_collections.ConfigDict()
    c.init_from.model_config.model = ml_collections.ConfigDict(dict(classifier="token"))
    c.init_from.restore_positional_embedding = True
    c.init_from.restore_input_embedding = True
    c.init_from.positional_embed_size_change = "tile"
    c.lr_configs = ml_collections.ConfigDict()
    c.lr_configs.learning_rate_schedule = "compound"
    c.lr_configs.factors = "constant * cosine_decay * linear_warmup"
    c.lr_configs.warmup_steps = 8390
    c.lr_configs.steps_per_cycle = 100_000
    c.lr_configs.base_learning_rate = 1e-1
    c.mixup = ml_collections.ConfigDict(dict(alpha=0.3))
    c.write_summary = True
    c.checkpoint = True
    c.debug_train = False
    c.debug_eval = False
    c.log_summary_steps = 100
    c.checkpoint_steps = 500
    return c


def test_original_scenic_config_completes():
    c = config_lib.complete_config(scenic_k400_config())
    assert c.model.hidden_size == 768
    assert c.dataset_configs.num_classes == 400
    assert c.optimizer_configs.momentum == 0.9  # Default filled in.
    assert c.grad_accum_steps == 1
    assert "datset_configs" not in c
    with pytest.raises(AttributeError):  # Locked.
        c.new_key = 1


@pytest.mark.parametrize(
    "path, value, named",
    [
        (("optimiser",), "adamw", "'config.optimiser'"),
        (("lr_configs", "base_lr"), 0.1, "'config.lr_configs.base_lr'"),
        (
            ("optimizer_configs", "momentun"),
            0.9,
            "Did you mean 'config.optimizer_configs.momentum'",
        ),
        (("model", "hidden"), 8, "'config.model.hidden'"),
        (("dataset_configs", "num_frame"), 8, "dataset_configs.num_frame"),
        (("datset_configs", "num_frames"), 8, "'config.datset_configs'"),
    ],
)
def test_unknown_key_is_named(path, value, named):
    c = scenic_k400_config()
    target = c
    for p in path[:-1]:
        if p not in target:
            target[p] = ml_collections.ConfigDict()
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(".", r"\.")):
        config_lib.complete_config(c)


def test_bad_values_are_named():
    c = scenic_k400_config()
    c.optimizer = "lamb"
    with pytest.raises(ValueError, match="config.optimizer='lamb'"):
        config_lib.complete_config(c)
    c = scenic_k400_config()
    c.lr_configs.factors = "constant * cosine"
    with pytest.raises(ValueError, match="unknown factor 'cosine'"):
        config_lib.complete_config(c)
    c = scenic_k400_config()
    c.batch_size = 64
    c.grad_accum_steps = 3
    with pytest.raises(ValueError, match="grad_accum_steps"):
        config_lib.complete_config(c)


def test_training_steps_from_epochs_or_steps():
    c = config_lib.complete_config(scenic_k400_config())
    assert config_lib.training_steps(c, 214834) == (30 * (214834 // 64), 214834 // 64)
    c = scenic_k400_config()
    c.num_training_steps = 7
    assert config_lib.training_steps(config_lib.complete_config(c), 640) == (7, 10)


def test_every_default_none_can_be_overridden_on_the_command_line():
    # ml_collections refuses `--config.x=v` on a NoneType field: defaults must be placeholders.
    def walk(c, prefix):
        for key in c.keys():
            if isinstance(c[key], ml_collections.ConfigDict):
                yield from walk(c[key], f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", c.get_type(key)

    bad = [k for k, t in walk(config_lib.default_config(), "") if t is type(None)]
    assert not bad


def test_cli_rejects_misspelt_override(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vivit_jax.main",
            "--config=configs/demo.py",
            f"--workdir={tmp_path}",
            "--config.batch_sise=8",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "batch_sise" in proc.stderr


def test_dataset_name_is_required():
    c = scenic_k400_config()
    del c["dataset_name"]
    with pytest.raises(ValueError, match="Set config.dataset_name"):
        config_lib.complete_config(c)


def test_bad_init_from_choice_fails_early():
    c = scenic_k400_config()
    c.init_from.positional_embed_size_change = "stretch"
    with pytest.raises(ValueError, match="positional_embed_size_change"):
        config_lib.complete_config(c)
