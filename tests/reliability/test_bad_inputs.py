"""Bad inputs: each gives an error that says what is wrong and what to do, and loses nothing.

Covered elsewhere: NaN loss (tests/training/test_train.py::test_nan_loss_stops_after_last_good_
checkpoint), a misspelt key inside train_and_evaluate (test_train.py::test_unknown_key), bad
records and missing shards (tests/data/test_dmvr.py).
"""

import os
import shutil

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags

from tests.reliability.conftest import REPO
from tests.training.conftest import make_dataset, tiny_config
from vivit_jax import config_lib, train
from vivit_jax.checkpoints import train_state


def _run(config, workdir):
    def dataset_fn(config, *, mesh, start_step):
        return make_dataset(config, mesh=mesh, start_step=start_step)

    return train.train_and_evaluate(config, str(workdir), dataset_fn=dataset_fn)


@pytest.fixture(scope="module")
def three_steps(tmp_path_factory):
    """A workdir holding checkpoint 3 of the tiny experiment."""
    workdir = tmp_path_factory.mktemp("three_steps")
    _run(tiny_config(num_training_steps=3), workdir)
    return workdir


def _copy(workdir, tmp_path):
    target = tmp_path / "work"
    shutil.copytree(workdir, target)
    return target


def test_workdir_of_another_experiment_is_refused(three_steps, tmp_path):
    workdir = _copy(three_steps, tmp_path)
    other = tiny_config(num_training_steps=6, **{"lr_configs.base_learning_rate": 1e-3})
    with pytest.raises(train_state.ConfigMismatchError) as e:
        _run(other, workdir)
    message = str(e.value)
    for text in (
        "lr_configs.base_learning_rate (checkpoint: 0.003, now: 0.001)",
        "num_training_steps (checkpoint: 3, now: 6)",
        "--config.resume_mismatch_ok=True",
    ):
        assert text in message
    assert "log_eval_steps" not in message  # Cadence keys are not part of the experiment.
    assert ocp.step.checkpoint_steps(str(workdir / "checkpoints")) == [3]  # Untouched.
    # Told to, it resumes.
    other.resume_mismatch_ok = True
    assert [s for s, _ in _run(other, workdir).train_history] == [4, 5, 6]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (  # Another size.
            {"model.hidden_size": 48, "model.mlp_dim": 96},
            r"does not fit this model.*encoder_norm/bias: checkpoint \(32,\), model \(48,\)",
        ),
        (  # Another variant: Model 2 has other parameters.
            {"model.attention_config.type": "factorized_encoder", "model.classifier": "token"},
            r"does not fit this model.*not in the checkpoint",
        ),
    ],
)
def test_checkpoint_of_another_variant_or_size(three_steps, tmp_path, overrides, expected):
    workdir = _copy(three_steps, tmp_path)
    config = tiny_config(num_training_steps=6, **overrides)
    with pytest.raises(train_state.ConfigMismatchError, match="model."):
        _run(config, workdir)
    config.resume_mismatch_ok = True  # Even when told to resume, shapes must fit.
    with pytest.raises(ValueError, match=expected):
        _run(config, workdir)
    assert ocp.step.checkpoint_steps(str(workdir / "checkpoints")) == [3]


def test_unknown_key_on_the_command_line():
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    demo = os.path.join(REPO, "configs", "demo.py")
    with pytest.raises(flags.UnrecognizedFlagError, match="'config.datset_name'"):
        fv(["prog", f"--config={demo}:tiny", "--config.datset_name=x"])


def _ds(**kw):
    return {"dataset_configs": kw}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr_configs.base_learning_rate": -0.1}, "base_learning_rate must be >= 0"),
        ({"lr_configs.warmup_steps": -5}, "warmup_steps must be >= 0"),
        ({"optimizer_configs.weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"optimizer_configs.momentum": 1.5}, r"momentum must be in \[0, 1\)"),
        ({"model.dropout_rate": -0.1}, "dropout_rate"),
        ({"label_smoothing": 1.2}, "label_smoothing"),
        ({"mixup.alpha": -1.0}, "mixup.alpha"),
        ({"num_training_steps": 0}, "num_training_steps must be > 0"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        (_ds(num_frames=0), "num_frames=0: must be a positive integer"),
        (_ds(crop_size=64, min_resize=32), "min_resize=32: must be >= dataset_configs.crop_size"),
        (_ds(stride=-2), "stride=-2"),
    ],
)
def test_values_out_of_range(overrides, message):
    config = tiny_config(**{k: v for k, v in overrides.items() if k != "dataset_configs"})
    if "dataset_configs" in overrides:
        config.dataset_configs = ml_collections.ConfigDict(overrides["dataset_configs"])
    with pytest.raises(ValueError, match=message):
        config_lib.complete_config(config)


def test_corrupt_video_at_train_time_names_the_record(corrupt_tfds, tmp_path):
    from tests.training.test_demo import demo_config
    from vivit_jax.data.pipeline import CorruptVideoError

    data_dir, path = corrupt_tfds
    config = demo_config("tiny")
    config.dataset_configs.data_dir = data_dir
    config.checkpoint_steps = 1
    with pytest.raises(CorruptVideoError, match=rf"{path}, record 17 .*not a complete JPEG"):
        train.train_and_evaluate(config, str(tmp_path))
    # Nothing lost: every step before the bad batch is checkpointed and readable.
    ckpt = train_state.Checkpointer(str(tmp_path))
    step = ckpt.latest_step()
    assert step is not None and ckpt.read_meta(step)["data_position"] == step
    ckpt.close()


def test_video_with_no_frames(tiny_tfds, monkeypatch):
    from tests.training.test_demo import demo_config
    from vivit_jax.data import get_dataset, sources
    from vivit_jax.data.pipeline import CorruptVideoError

    real_get = sources.TfdsSource.get

    def get(self, i):
        frames, labels, name = real_get(self, i)
        return ([] if i == 5 else frames), labels, name

    monkeypatch.setattr(sources.TfdsSource, "get", get)
    config = config_lib.complete_config(demo_config("tiny"))
    config.unlock()
    config.dataset_configs.data_dir = tiny_tfds
    with pytest.raises(CorruptVideoError, match=r"record 5 \(example 5\): the video has no frames"):
        batches = get_dataset(config).train_iter
        for _ in range(6):
            np.asarray(next(batches)["inputs"])
