"""`convert` writes what it says it wrote: existing outputs need --overwrite, every write is
read back, and the printed path is the one on disk; unknown inputs are named as such."""

import os

import ckpt_testlib as lib
import numpy as np
import pytest

from vivit_jax import checkpoints
from vivit_jax.checkpoints import CheckpointError, convert, formats


@pytest.fixture(scope="module")
def two_models():
    """(a, b): two different Model 1 parameter trees of the same shapes."""
    cfg = lib.vivit_config("spacetime", "token", layers=1)
    return lib.init_vivit(cfg, num_classes=4, seed=1)[1], lib.init_vivit(
        cfg, num_classes=4, seed=2
    )[1]


@pytest.fixture
def workdir(tmp_path, two_models):
    """A finished run's workdir: model `a` at orbax steps 3 and 6; model `b` as an .npz."""
    a, b = two_models
    for step in (3, 6):
        checkpoints.save_params_orbax(tmp_path / "wd_base" / "checkpoints", a, step)
    flat = {"/".join(p): v for p, v in lib.trees.flatten(b).items()}
    np.savez(tmp_path / "b.npz", **flat)
    return tmp_path


def _orbax(root, step):
    return root / "wd_base" / "checkpoints" / str(step)


def test_existing_orbax_step_needs_overwrite_and_is_then_replaced(workdir, two_models):
    a, b = two_models
    args = ["--input=b.npz", "--to=orbax", "--output=wd_base/checkpoints", "--step=6"]
    refused = lib.run_module("vivit_jax.checkpoints.convert", *args, cwd=workdir)
    assert refused.returncode == 1, refused.stderr
    assert "already holds step 6" in refused.stderr and "--overwrite" in refused.stderr
    assert "Wrote" not in refused.stdout
    lib.assert_trees_equal(checkpoints.load_params(_orbax(workdir, 6)), a)

    done = lib.run_module("vivit_jax.checkpoints.convert", *args, "--overwrite", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Wrote orbax checkpoint to {_orbax(workdir, 6)}"
    lib.assert_trees_equal(checkpoints.load_params(_orbax(workdir, 6)), b)
    lib.assert_trees_equal(checkpoints.load_params(_orbax(workdir, 3)), a)  # Untouched.


def test_default_step_0_of_an_existing_output(workdir, two_models, capsys):
    a, b = two_models
    out = workdir / "converted"
    assert convert.main([f"--input={_orbax(workdir, 3)}", "--to=orbax", f"--output={out}"]) == 0
    assert convert.main(["--input=" + str(workdir / "b.npz"), "--to=orbax", f"--output={out}"]) == 1
    assert "already holds step 0" in capsys.readouterr().err
    lib.assert_trees_equal(checkpoints.load_params(out), a)


def test_a_step_before_the_latest_is_written(workdir, two_models, capsys):
    """orbax's CheckpointManager skips, without an error, any step up to the latest it holds."""
    _, b = two_models
    argv = [f"--input={workdir / 'b.npz'}", "--to=orbax", f"--output={_orbax(workdir, 3).parent}"]
    assert convert.main([*argv, "--step=1"]) == 0
    assert capsys.readouterr().out.strip().endswith(os.path.join("checkpoints", "1"))
    lib.assert_trees_equal(checkpoints.load_params(_orbax(workdir, 1)), b)


def test_nothing_written_is_never_reported_as_written(workdir, monkeypatch, capsys):
    monkeypatch.setattr(formats, "save_params_orbax", lambda *a, **k: str(_orbax(workdir, 9)))
    argv = [f"--input={workdir / 'b.npz'}", "--to=orbax", f"--output={workdir / 'new'}"]
    assert convert.main(argv) == 1
    out = capsys.readouterr()
    assert "Wrote" not in out.out and "Nothing was written" in out.err


@pytest.mark.parametrize("to, name", [("npz", "p.npz"), ("msgpack", "ck"), ("huggingface", "hf")])
def test_existing_file_outputs_need_overwrite(workdir, two_models, to, name, capsys):
    a, b = two_models
    out = workdir / name
    argv = ["--to=" + to, f"--output={out}", "--num_frames=8", "--image_size=32"]
    assert convert.main([f"--input={_orbax(workdir, 3)}", *argv]) == 0
    assert convert.main([f"--input={workdir / 'b.npz'}", *argv]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err
    lib.assert_trees_equal(checkpoints.load_params(out), a)
    assert convert.main([f"--input={workdir / 'b.npz'}", *argv, "--overwrite"]) == 0
    lib.assert_trees_equal(checkpoints.load_params(out), b)


def test_npz_output_prints_the_name_numpy_wrote(workdir, two_models, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    assert convert.main(["--input=b.npz", "--to=npz", "--output=out_noext"]) == 0
    assert capsys.readouterr().out.strip() == f"Wrote npz checkpoint to {workdir / 'out_noext.npz'}"
    assert not os.path.exists("out_noext")
    lib.assert_trees_equal(checkpoints.load_params("out_noext.npz"), two_models[1])
    assert convert.convert("b.npz", "npz", "again") == str(workdir / "again.npz")


@pytest.mark.parametrize("name", ["x.bin", "weights", "model.safetensors"])
def test_random_bytes_are_no_known_format(tmp_path, capsys, name):
    (tmp_path / name).write_bytes(np.random.default_rng(0).bytes(1000))
    assert convert.main([f"--input={tmp_path / name}"]) == 1
    err = capsys.readouterr().err
    assert "is not a checkpoint of any known format" in err and "1,000 bytes" in err
    assert "first bytes b'_\\x82" in err and "HuggingFace model directory" not in err
    for fmt in formats.FORMATS:
        assert fmt in err


def test_a_file_of_a_huggingface_directory_reads_the_directory(workdir, two_models):
    out = workdir / "hf"
    convert.convert(str(_orbax(workdir, 3)), "huggingface", str(out), num_frames=8, image_size=32)
    assert checkpoints.detect_format(str(out / "model.safetensors")) == ("huggingface", str(out))
    lib.assert_trees_equal(checkpoints.load_params(out / "config.json"), two_models[0])


def test_wrong_names_in_npz_are_named(tmp_path, capsys):
    path = tmp_path / "wrong.npz"
    np.savez(path, **{"embedding/kernel": np.zeros((8, 8, 3, 32)), "Transformer/foo": np.zeros(3)})
    with pytest.raises(CheckpointError, match="lacks embedding/bias, Transformer/posembed_input"):
        checkpoints.load_params(path)
    assert convert.main([f"--input={path}"]) == 1
    err = capsys.readouterr().err
    assert "Transformer/encoder_norm" in err and "it holds Transformer/foo, embedding/kernel" in err
