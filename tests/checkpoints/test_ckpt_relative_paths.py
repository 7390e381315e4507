"""A relative path to an orbax checkpoint reads as the absolute one, at every entry point:
`convert --input`, `predict --checkpoint`, `main --mode=evaluate --checkpoint` and
`config.init_from.checkpoint_path` (orbax itself reads nothing through a relative path)."""

import os

import ckpt_testlib as lib
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.evaluation.conftest import load_config
from vivit_jax import checkpoints, config_lib

DEMO_TINY = os.path.join(lib.REPO, "configs", "demo.py") + ":tiny"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """(directory, params): `directory/wd_base` is a workdir with orbax steps 3 and 6 of
    configs/demo.py:tiny's model (random parameters, head included)."""
    from vivit_jax.data.builders import moving_shapes
    from vivit_jax.models import create_model

    root = tmp_path_factory.mktemp("relative")
    config = config_lib.complete_config(load_config("configs/demo.py", "tiny"))
    model = create_model(config.model, len(moving_shapes.CLASS_NAMES))
    params = lib.random_params(
        lambda rng, x: model.init(rng, x, train=False),
        jax.random.PRNGKey(0),
        jnp.zeros((1, 8, 16, 16, 3)),
    )
    for step in (3, 6):
        checkpoints.save_params_orbax(root / "wd_base" / "checkpoints", params, step)
    return root, params


def test_load_params_and_convert(run_dir, monkeypatch):
    root, params = run_dir
    monkeypatch.chdir(root)
    for relative in ("wd_base", "wd_base/checkpoints", "wd_base/checkpoints/6/state"):
        lib.assert_trees_equal(checkpoints.load_params(relative), params)
    proc = lib.run_module("vivit_jax.checkpoints.convert", "--input=wd_base", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert "format: orbax" in proc.stdout and '"hidden_size": 64' in proc.stdout


def test_init_from_checkpoint_path(run_dir, monkeypatch):
    root, params = run_dir
    monkeypatch.chdir(root)
    config = config_lib.complete_config(load_config("configs/demo.py", "tiny"))
    config.init_from = {"checkpoint_path": "wd_base", "restore_output_projection": True}
    zeros = jax.tree.map(jnp.zeros_like, params)
    lib.assert_trees_equal(checkpoints.init_from_pretrained(zeros, config), params)


def test_predict(run_dir):
    from vivit_jax.data.video_io import write_video

    root, _ = run_dir
    frames = np.random.default_rng(1).integers(0, 255, (12, 16, 16, 3), dtype=np.uint8)
    write_video(str(root / "clip.mp4"), frames, fps=10)
    args = [f"--config={DEMO_TINY}", "--checkpoint=wd_base", "clip.mp4"]
    proc = lib.run_module("vivit_jax.predict", *args, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("clip.mp4: 1 view(s) of 12 frames"), proc.stdout


def test_main_evaluate(run_dir, tmp_path):
    from vivit_jax.data.build import build

    root, _ = run_dir
    data_dir = str(tmp_path / "tfds")
    build("moving_shapes/tiny", data_dir, None, None, None, False)
    args = [
        "--mode=evaluate",
        f"--config={DEMO_TINY}",
        f"--config.dataset_configs.data_dir={data_dir}",
        "--workdir=eval_out",
        "--checkpoint=wd_base",
    ]
    proc = lib.run_module("vivit_jax.main", *args, cwd=root, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "top-1" in proc.stdout, proc.stdout[-2000:]
    assert os.path.isdir(root / "eval_out")
