"""train_and_evaluate: exact resume (also after SIGTERM), NaN stop, checkpoint layout, bad input."""

import os
import signal

import jax
import numpy as np
import pytest

from tests.training.conftest import make_dataset, tiny_config
from vivit_jax import train
from vivit_jax.checkpoints import train_state


def _run(config, workdir, **dataset_kwargs):
    def dataset_fn(config, *, mesh, start_step):
        return make_dataset(config, mesh=mesh, start_step=start_step, **dataset_kwargs)

    return train.train_and_evaluate(config, str(workdir), dataset_fn=dataset_fn)


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """6 steps without interruption (dropout and mixup on, so the rng matters)."""
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, _run(_config(), workdir)


def _config(**kw):
    return tiny_config(
        **{"model.dropout_rate": 0.1, "mixup.alpha": 0.2, "num_training_steps": 6, **kw}
    )


def test_run_logs_evaluates_and_checkpoints(straight):
    workdir, result = straight
    assert result.step == 6 and not result.stopped_early
    assert [s for s, _ in result.train_history] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in result.eval_history] == [3, 6]
    assert result.test_history == []  # dataset_configs.do_multicrop_test is off
    assert {"train/loss", "train/accuracy", "train/learning_rate", "train/grad_norm"} <= set(
        result.train_history[-1][1]
    )
    assert {"valid/top1", "valid/top5", "valid/loss"} <= set(result.eval_history[-1][1])
    # Orbax layout the checkpoints package reads: <workdir>/checkpoints/<step>/state/params.
    assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
    from vivit_jax.checkpoints import load_params

    params = load_params(str(workdir / "checkpoints" / "6"))
    _assert_same_params(params, result.state.params)


def test_resume_equals_straight_run(straight, tmp_path):
    _, ref = straight
    first = _run(_config(num_training_steps=6), tmp_path, on_step=_stop_at(3))
    assert first.stopped_early and first.step == 3
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]
    second = _run(_config(), tmp_path)
    assert second.step == 6
    _assert_same_params(second.state.params, ref.state.params)
    np.testing.assert_allclose(
        [h["train/loss"] for _, h in first.train_history + second.train_history],
        [h["train/loss"] for _, h in ref.train_history],
        rtol=1e-6,
    )
    assert second.eval_history[-1][1] == pytest.approx(ref.eval_history[-1][1])


def _stop_at(step):
    """Sends this process SIGTERM while the batch of `step` is being prepared."""

    def on_step(s):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_step


def test_nan_loss_stops_after_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match="at step 5.*checkpoint \\(step 3\\)"):
        _run(_config(log_summary_steps=2), tmp_path, nan_at_step=5)
    ckpt = train_state.Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 3
    ckpt.close()


def test_batch_not_divisible_by_devices(tmp_path):
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 8 devices"):
        _run(_config(batch_size=6), tmp_path)


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="is not writable"):
        _run(_config(), blocker / "workdir")


def test_unknown_key(tmp_path):
    config = _config()
    config.unlock()
    config.num_trainig_steps = 3
    with pytest.raises(ValueError, match="'config.num_trainig_steps'.*num_training_steps"):
        _run(config, tmp_path)


def test_missing_dataset_says_how_to_build_it(tmp_path):
    config = _config()
    config.dataset_name = "kinetics400"  # needs a manual download; the built-in set self-builds
    config.dataset_configs.data_dir = str(tmp_path / "empty_tfds")
    with pytest.raises(Exception, match="vivit_jax.data.build --dataset=kinetics400 --manual_dir"):
        train.train_and_evaluate(config, str(tmp_path / "work"))


def test_evaluate_latest_checkpoint(straight):
    """`vivit_jax.evaluate` over the validation videos (one view each) = the run's last eval."""
    from vivit_jax import evaluate

    workdir, result = straight

    def dataset_fn(config, *, mesh, start_step):
        ds = make_dataset(config, mesh=mesh, start_step=start_step)
        ds.test_iter = ds.valid_iter
        ds.meta_data["num_test_examples"] = ds.meta_data["num_eval_examples"]
        return ds

    results = evaluate.evaluate(_config(), str(workdir), dataset_fn=dataset_fn)
    assert results["step"] == 6 and results["num_videos"] == 12
    assert results["top1"] == pytest.approx(result.eval_history[-1][1]["valid/top1"])


def _with_test_split(**kwargs):
    """The synthetic dataset whose validation videos double as the test split (one view)."""

    def dataset_fn(config, *, mesh, start_step):
        ds = make_dataset(config, mesh=mesh, start_step=start_step, **kwargs)
        ds.test_iter = ds.valid_iter
        ds.meta_data["num_test_examples"] = ds.meta_data["num_eval_examples"]
        return ds

    return dataset_fn


def test_multicrop_test_every_log_test_epochs(tmp_path):
    # 8 steps per epoch; log_test_epochs=0.25 -> a test every 2 steps; step 6's is the final one.
    config = _config(
        log_eval_steps=2,
        **{"dataset_configs.do_multicrop_test": True, "dataset_configs.log_test_epochs": 0.25},
    )
    result = train.train_and_evaluate(config, str(tmp_path), dataset_fn=_with_test_split())
    assert [s for s, _ in result.test_history] == [2, 4]
    assert result.test_results["step"] == 6
    valid = dict(result.eval_history)
    for step, scalars in result.test_history:  # same videos, one view: the same accuracy
        assert scalars["test/top1"] == pytest.approx(valid[step]["valid/top1"])
        assert scalars["test/loss"] == pytest.approx(valid[step]["valid/loss"], rel=1e-5)
    assert result.test_results["top1"] == pytest.approx(valid[6]["valid/top1"])


def test_log_test_epochs_must_be_positive(tmp_path):
    config = _config(
        **{"dataset_configs.do_multicrop_test": True, "dataset_configs.log_test_epochs": 0}
    )
    with pytest.raises(ValueError, match="dataset_configs.log_test_epochs=0"):
        train.train_and_evaluate(config, str(tmp_path), dataset_fn=_with_test_split())


def test_init_from_a_checkpoint_of_this_project(straight, tmp_path):
    workdir, result = straight
    path = str(workdir / "checkpoints" / "6")
    config = _config(num_training_steps=1, checkpoint=False)
    config.init_from.checkpoint_path = path
    fine_tuned = _run(config, tmp_path)
    # One step at lr 0 (warmup): the parameters are the checkpoint's, the head re-initialised.
    restored = result.state.params
    np.testing.assert_allclose(
        fine_tuned.state.params["embedding"]["kernel"], restored["embedding"]["kernel"]
    )
    assert not np.any(np.asarray(fine_tuned.state.params["output_projection"]["kernel"]))
