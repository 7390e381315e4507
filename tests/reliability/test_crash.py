"""Crash safety: SIGKILL at a random step, a checkpoint cut short or damaged, a full disk.

The kill is real (a subprocess on the built-in tiny dataset); the damaged checkpoint and the full
disk are made in-process on the synthetic dataset of tests/training.
"""

import errno
import os
import random
import re
import signal

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.reliability.conftest import final_params, max_abs_diff, read_losses
from tests.training.conftest import make_dataset, tiny_config
from vivit_jax import train
from vivit_jax.checkpoints import train_state


def test_sigkill_at_a_random_step_then_restart_equals_uninterrupted(
    launcher, reference_run, tmp_path
):
    kill_step = random.Random().randint(1, 5)
    print(f"SIGKILL while checkpoint {kill_step} is being saved")
    workdir = str(tmp_path / "killed")
    run = launcher(workdir)
    run.wait_for(f"Saving checkpoint {kill_step} ")  # The asynchronous write is in flight.
    run.proc.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    saved = ocp.step.checkpoint_steps(os.path.join(workdir, "checkpoints"))
    assert max(saved, default=0) <= kill_step  # Maybe not yet committed: then never listed.

    again = launcher(workdir)
    assert again.wait() == 0, again.output()[-3000:]
    resumed = re.search(r"Resumed from checkpoint (\d+)", again.output())
    if saved:
        assert resumed and int(resumed.group(1)) == max(saved), again.output()[-3000:]
    else:  # Killed before the first checkpoint was committed: a fresh start.
        assert resumed is None
    diff = max_abs_diff(final_params(workdir), final_params(reference_run))
    print(f"killed at {kill_step}, resumed from {max(saved, default=0)}: max |diff| {diff:.1e}")
    assert diff == 0.0
    ref, losses = read_losses(reference_run), read_losses(workdir)
    assert set(losses) == set(ref)
    for step, loss in losses.items():
        assert loss == pytest.approx(ref[step], rel=1e-6), step


def _run(config, workdir, **dataset_kwargs):
    def dataset_fn(config, *, mesh, start_step):
        return make_dataset(config, mesh=mesh, start_step=start_step, **dataset_kwargs)

    return train.train_and_evaluate(config, str(workdir), dataset_fn=dataset_fn)


def _config(**kw):
    return tiny_config(**{"model.dropout_rate": 0.1, "checkpoint_steps": 1, **kw})


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return _run(_config(), tmp_path_factory.mktemp("straight"))


def _same_params(a, b):
    assert max_abs_diff(a.state.params, b.state.params) < 1e-7


def _stop_at(step):
    def on_step(s):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_step


def test_half_written_and_damaged_checkpoints_are_never_read(straight, tmp_path):
    first = _run(_config(), tmp_path, on_step=_stop_at(4))
    assert first.stopped_early and first.step == 4
    ckpts = tmp_path / "checkpoints"
    # A save cut short by a kill: orbax's temporary directory, never listed.
    partial = ckpts / "5.orbax-checkpoint-tmp-1700000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "manifest.ocdbt").write_bytes(b"\0" * 7)
    # A checkpoint under its final name whose array files are gone (a non-atomic filesystem).
    for path in sorted((ckpts / "4" / "state").rglob("*"), reverse=True):
        if path.is_file() and path.name != "_METADATA":
            path.unlink()
    resumed = _run(_config(), tmp_path)
    assert resumed.step == 6
    assert [s for s, _ in resumed.train_history] == [4, 5, 6]  # Step 4 redone from 3.
    _same_params(resumed, straight)
    assert any(name.startswith("4.damaged-") for name in os.listdir(ckpts))


def test_disk_full_while_saving_keeps_the_previous_checkpoint(straight, tmp_path, monkeypatch):
    real_save = ocp.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if x.get("step") == 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await real_save(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    config = _config(checkpoint_steps=3)
    with pytest.raises(
        train_state.CheckpointSaveError,
        match=r"(?s)Saving checkpoint 6 .*No space left on device.*previous checkpoint "
        r"\(step 3\) is intact",
    ):
        _run(config, tmp_path)
    assert ocp.step.checkpoint_steps(str(tmp_path / "checkpoints")) == [3]
    monkeypatch.undo()  # Space freed: the same command resumes from step 3.
    resumed = _run(config, tmp_path)
    assert [s for s, _ in resumed.train_history] == [4, 5, 6]
    _same_params(resumed, straight)
    np.testing.assert_allclose(
        [h["train/loss"] for _, h in resumed.train_history],
        [h["train/loss"] for _, h in straight.train_history[3:]],
        rtol=1e-6,
    )
