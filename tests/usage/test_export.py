"""export: every variant's jax.export program and SavedModel give the checkpoint's logits in a
Python that cannot import vivit_jax; bad checkpoint/config pairs are one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from tests.usage import fixtures as fx
from vivit_jax import export

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_runner.py")


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{variant: export directory with reference.npz}, each exported by the command line."""
    root = tmp_path_factory.mktemp("export")
    dirs = {}
    for name in fx.VARIANTS:
        config_path = fx.write_config(root, name)
        workdir, model, params = fx.make_checkpoint(config_path, root / name)
        out = os.fspath(root / "out" / name)
        argv = ["export", f"--config={config_path}", f"--checkpoint={workdir}", f"--output={out}"]
        assert export.main(argv) == 0
        config = fx.load(config_path)
        splits = config.dataset_configs.class_splits if name == "epic_multihead" else None
        ref, apply = {}, fx.apply_fn(model)
        for b in (1, 3):
            frames = fx.frames(b, config, seed=b)
            x = frames.astype(np.float32) * np.float32(2 / 255) - 1  # zero_centering (demo)
            logits = np.asarray(apply(params, x), np.float32)
            heads = np.split(logits, np.cumsum(splits)[:-1], -1) if splits else [logits]
            ref[f"frames{b}"], ref[f"logits{b}"] = frames, logits
            ref[f"probabilities{b}"] = np.concatenate([_softmax(h) for h in heads], -1)
        np.savez(os.path.join(out, "reference.npz"), **ref)
        dirs[name] = out
    return dirs


def _bare(mode: str, directories, cwd, isolate: bool = True):
    """bare_runner.py in a fresh Python started outside the repo, without PYTHONPATH; with
    `isolate`, `-S` (no .pth files, so no editable install) and only site-packages added."""
    script = shutil.copy(RUNNER, os.fspath(cwd))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    site = sysconfig.get_paths()["purelib"]
    command = [sys.executable, *(["-S"] if isolate else []), script, mode, site, *directories]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("mode", ["jax", "tf"])
def test_exported_models_give_the_checkpoint_logits_without_the_project(exported, tmp_path, mode):
    done = _bare(mode, list(exported.values()), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(out["results"]) == sorted(fx.VARIANTS)
    for name, errors in out["results"].items():
        assert set(errors) >= {"1", "3"}, name
        assert all(e <= 1e-4 for e in errors.values()), (name, errors)
    # Neither needs flax (nor, as checked in the runner, vivit_jax); jax.export not TF.
    assert "flax" not in out["modules"] and "vivit_jax" not in out["modules"]
    assert ("tensorflow" in out["modules"]) == (mode == "tf")


def test_the_isolation_check_fails_where_the_editable_install_is_active(exported, tmp_path):
    """Without -S the venv's editable finder makes vivit_jax importable: the runner says so."""
    done = _bare("jax", [exported["model1_gap"]], tmp_path, isolate=False)
    assert done.returncode != 0
    assert "vivit_jax is importable from" in done.stderr


def test_metadata_and_labels(exported):
    with open(os.path.join(exported["epic_multihead"], export.METADATA_FILE)) as f:
        meta = json.load(f)
    assert meta["input"] == {
        "shape": [None, 8, 16, 16, 3],
        "dtype": "uint8",
        "layout": "[batch, frames, height, width, RGB]",
    }
    assert meta["heads"] == [{"name": "noun", "size": 5}, {"name": "verb", "size": 3}]
    assert meta["output"]["logits"] == [None, 8] and meta["class_splits"] == [5, 3]
    assert meta["variant"] == "factorized_encoder" and meta["classifier"] == "token"
    assert meta["model_name"] == "vivit_multihead_classification"
    assert meta["normalisation"]["range"] == [-1.0, 1.0]
    assert meta["checkpoint"]["format"] == "orbax" and "cpu" in meta["platforms"]
    assert set(meta["versions"]) == {"jax", "flax", "vivit_jax", "tensorflow"}
    with open(os.path.join(exported["model1_gap"], export.LABELS_FILE)) as f:
        labels = json.load(f)
    assert labels is None or len(labels) == fx.NUM_CLASSES


@pytest.mark.parametrize(
    "override, words",
    [
        ({"model.attention_config.type": "factorized_encoder"}, "does not fit config.model"),
        ({"model.hidden_size": 32}, "does not fit config.model"),
    ],
    ids=["wrong_variant", "wrong_width"],
)
def test_a_bad_checkpoint_config_pair_is_one_error_line(tmp_path, capsys, override, words):
    good = fx.write_config(tmp_path, "model1_gap")
    workdir = fx.make_checkpoint(good, tmp_path / "ckpt")[0]
    os.rename(good, tmp_path / "good.py")
    bad = fx.write_config(tmp_path, "model1_gap", **override)
    out = tmp_path / "out"
    argv = ["export", f"--config={bad}", f"--checkpoint={workdir}", f"--output={out}"]
    assert export.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot load --checkpoint={workdir}: ")
    assert words in err[0]
    assert not out.exists()


def test_platforms_flag_lowers_for_each_and_still_runs_here(tmp_path):
    import jax

    config_path = fx.write_config(tmp_path, "model1_gap")
    workdir, model, params = fx.make_checkpoint(config_path, tmp_path / "ckpt")
    out = tmp_path / "out"
    argv = [
        "export",
        f"--config={config_path}",
        f"--checkpoint={workdir}",
        f"--output={out}",
        "--platforms=cpu,cuda,tpu",
    ]
    assert export.main(argv) == 0
    exported = jax.export.deserialize((out / export.JAX_EXPORT_FILE).read_bytes())
    assert exported.platforms == ("cpu", "cuda", "tpu")
    frames = fx.frames(2, fx.load(config_path))
    want = fx.apply_fn(model)(params, frames.astype(np.float32) * np.float32(2 / 255) - 1)
    np.testing.assert_allclose(exported.call(frames), want, atol=1e-4)
    assert json.loads((out / export.METADATA_FILE).read_text())["platforms"] == [
        "cpu",
        "cuda",
        "tpu",
    ]
