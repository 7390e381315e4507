"""What a resume does with each kind of checkpoint fault: damage is set aside, the rest is an error.

Damage (set aside as `<step>.damaged-<time>`, the previous checkpoint used): a `meta` item that is
truncated, empty or missing, an empty step folder, flipped bytes in the arrays. Not damage (an
error naming the checkpoint, nothing renamed): files the user cannot read, another optimiser's
state (unless `resume_mismatch_ok`, which keeps the parameters and starts a new optimiser state),
a failed save (reported under its own step).
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.reliability.conftest import REPO, max_abs_diff
from tests.training.conftest import make_dataset, tiny_config
from vivit_jax import train
from vivit_jax.checkpoints import train_state


def _run(config, workdir, **kw):
    def dataset_fn(config, *, mesh, start_step):
        return make_dataset(config, mesh=mesh, start_step=start_step, **kw)

    return train.train_and_evaluate(config, str(workdir), dataset_fn=dataset_fn)


def _config(**kw):
    return tiny_config(**{"checkpoint_steps": 3, "num_training_steps": 6, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-step AdamW run with checkpoints 3 and 6, and its result."""
    workdir = tmp_path_factory.mktemp("finished")
    return workdir, _run(_config(), workdir)


def _copy(workdir, tmp_path):
    target = tmp_path / "work"
    shutil.copytree(workdir, target)
    return target


def _listing(workdir):
    return sorted(os.listdir(workdir / "checkpoints"))


def _damage_meta(step_dir, how):
    meta = step_dir / "meta" / "metadata"
    if how == "truncated":
        meta.write_bytes(meta.read_bytes()[:20])
    elif how == "empty":
        meta.write_bytes(b"")
    elif how == "deleted":
        meta.unlink()


@pytest.mark.parametrize("how", ["truncated", "empty", "deleted", "empty step folder"])
def test_damaged_meta_is_set_aside_and_the_previous_checkpoint_used(finished, tmp_path, how):
    workdir = _copy(finished[0], tmp_path)
    if how == "empty step folder":
        (workdir / "checkpoints" / "12").mkdir()
        damaged, resumed_from = "12", 6
    else:
        _damage_meta(workdir / "checkpoints" / "6", how)
        damaged, resumed_from = "6", 3
    result = _run(_config(), workdir)
    names = _listing(workdir)
    assert any(n.startswith(f"{damaged}.damaged-") for n in names), names
    assert "3" in names  # The healthy checkpoint is never touched.
    if resumed_from == 3:  # Steps 4-6 are redone from checkpoint 3.
        assert [s for s, _ in result.train_history] == [4, 5, 6]
        assert max_abs_diff(result.state.params, finished[1].state.params) < 1e-6
    else:  # Checkpoint 6 is the finished run's last: nothing to train.
        assert result.train_history == [] and result.step == 6


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bytes_are_found_by_the_checksums(finished, tmp_path, caplog):
    workdir = _copy(finished[0], tmp_path)
    # One bit in every data file (OCDBT may keep files that no array refers to any more).
    for path in (workdir / "checkpoints" / "6" / "state").rglob("d/*"):
        _flip_byte(path, os.path.getsize(path) // 2)
    with caplog.at_level("ERROR"):
        result = _run(_config(), workdir)
    assert "Checkpoint 6 is damaged" in caplog.text
    assert any(n.startswith("6.damaged-") for n in _listing(workdir))
    assert [s for s, _ in result.train_history] == [4, 5, 6]  # From checkpoint 3, as it was.
    assert max_abs_diff(result.state.params, finished[1].state.params) < 1e-6


def test_checksums_change_with_any_flipped_bit():
    from vivit_jax.checkpoints import checksums

    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    base = checksums.tree_checksums({"x": x})
    for i in (0, 137, 999):
        for bit in (0, 17, 31):
            y = x.view(np.uint32).copy()
            y[i] ^= np.uint32(1 << bit)
            assert checksums.tree_checksums({"x": y.view(np.float32)}) != base
    swapped = x.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    assert checksums.tree_checksums({"x": swapped}) != base  # Positions count too.
    half = {"h": x.astype(jax.numpy.bfloat16), "b": x > 0, "i": np.arange(7, dtype=np.int32)}
    assert set(checksums.tree_checksums(half)) == {"h", "b", "i"}


def test_another_optimizer_is_refused_without_mismatch_ok(finished, tmp_path):
    workdir = _copy(finished[0], tmp_path)
    with pytest.raises(train_state.ConfigMismatchError, match="optimizer"):
        _run(_config(optimizer="momentum"), workdir)
    assert _listing(workdir) == ["3", "6"]


def _drop_from_fingerprint(workdir, prefix):
    """The checkpoints as an older version wrote them: no `prefix.*` keys in the fingerprint."""
    for step in ("3", "6"):
        meta = workdir / "checkpoints" / step / "meta" / "metadata"
        data = json.loads(meta.read_text())
        data["config"] = {k: v for k, v in data["config"].items() if not k.startswith(prefix)}
        meta.write_text(json.dumps(data))


def test_a_key_added_since_the_checkpoint_counts_as_its_default(finished, tmp_path):
    """A fingerprint without `freeze` (written before the key existed) resumes with the default
    freeze, and is another experiment with a frozen backbone."""
    workdir = _copy(finished[0], tmp_path)
    _drop_from_fingerprint(workdir, "freeze.")
    ckpt = train_state.Checkpointer(str(workdir))
    assert not any(k.startswith("freeze.") for k in ckpt.read_meta(6)["config"])
    ckpt.close()
    result = _run(_config(), workdir)  # Finished: restored, nothing left to train.
    assert int(result.state.step) == 6 and result.train_history == []
    with pytest.raises(
        train_state.ConfigMismatchError, match=r"freeze.backbone \(checkpoint: <absent>"
    ):
        _run(_config(**{"freeze.backbone": True}), workdir)


def test_another_optimizer_with_mismatch_ok_keeps_the_parameters(finished, tmp_path, caplog):
    """AdamW workdir, momentum now: parameters and step restored, a new optimiser state."""
    workdir = _copy(finished[0], tmp_path)
    config = _config(optimizer="momentum", num_training_steps=7, resume_mismatch_ok=True)
    with caplog.at_level("WARNING"):
        result = _run(config, workdir, on_step=None)
    assert "started a new optimiser state" in caplog.text
    assert [s for s, _ in result.train_history] == [7]
    assert _listing(workdir) == ["3", "6", "7"]  # Nothing set aside.
    # The step-7 update started from checkpoint 6's parameters: lr * (momentum trace of one
    # gradient) is small, far smaller than the distance to a fresh initialisation.
    moved = max_abs_diff(result.state.params, finished[1].state.params)
    assert 0 < moved < 0.05
    ckpt = train_state.Checkpointer(str(workdir))
    assert ckpt.read_meta(7)["config"]["optimizer"] == '"momentum"'
    ckpt.close()


def test_failed_save_is_reported_under_its_own_step(tmp_path, monkeypatch):
    real_save = ocp.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if x.get("step") == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await real_save(self, x, directory)

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    with pytest.raises(
        train_state.CheckpointSaveError,
        match=r"Saving checkpoint 3 .*No space left on device.*No earlier checkpoint exists",
    ):
        _run(_config(num_training_steps=9), tmp_path)
    assert ocp.step.checkpoint_steps(str(tmp_path / "checkpoints")) == []


def _without_file_access_override():
    """A command prefix that runs a program as root without CAP_DAC_OVERRIDE (so file modes
    apply to it), or None where that is not possible here."""
    caps = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_unreadable_checkpoint_is_an_error_and_nothing_is_renamed(
    finished, tmp_path, tiny_tfds, session_dir
):
    """A real process that cannot read `manifest.ocdbt` (mode 000, no DAC override)."""
    if os.geteuid() == 0:
        prefix = _without_file_access_override()
        if prefix is None:
            pytest.skip("root here and setpriv cannot drop CAP_DAC_OVERRIDE")
    else:
        prefix = []
    from tests.reliability.conftest import Launch

    workdir = tmp_path / "work"
    run = Launch(
        [
            "--config=configs/demo.py:tiny",
            f"--config.dataset_configs.data_dir={tiny_tfds}",
            f"--workdir={workdir}",
        ],
        devices=1,
        cache_dir=str(session_dir / "xla_cache"),
        log_path=str(tmp_path / "first.log"),
    )
    assert run.wait() == 0, run.output()[-3000:]
    manifest = workdir / "checkpoints" / "6" / "state" / "manifest.ocdbt"
    manifest.chmod(0)
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    args = [
        sys.executable,
        "-m",
        "vivit_jax.main",
        "--config=configs/demo.py:tiny",
        f"--config.dataset_configs.data_dir={tiny_tfds}",
        "--config.num_training_steps=8",
        "--config.resume_mismatch_ok=True",
        f"--workdir={workdir}",
    ]
    proc = subprocess.run([*prefix, *args], cwd=REPO, env=env, capture_output=True, text=True)
    manifest.chmod(0o644)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert "CheckpointAccessError" in last and str(manifest) in last, last
    assert "Nothing was set aside" in last
    assert _listing(workdir) == ["3", "6"]
