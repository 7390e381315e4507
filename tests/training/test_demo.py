"""configs/demo.py end to end in its short mode, on the real input pipeline and built-in data.

The full accuracy run (≥ 95% top-1, single-frame control near chance) is
`experiments/demo_accuracy.py`.
"""

import importlib.util
import os

import numpy as np
import pytest

from vivit_jax import config_lib, evaluate, train
from vivit_jax.models import create_model, validate_input_shape

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def demo_config(arg=None):
    spec = importlib.util.spec_from_file_location("demo", os.path.join(REPO, "configs", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    from vivit_jax.data.build import build

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    build("moving_shapes/tiny", data_dir, None, None, None, False)
    return data_dir


def test_demo_tiny_trains_evaluates_and_resumes(tiny_data_dir, tmp_path):
    config = demo_config("tiny")
    config.dataset_configs.data_dir = tiny_data_dir
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result.step == config.num_training_steps
    assert all(np.isfinite(h["train/loss"]) for _, h in result.train_history)
    top1 = result.eval_history[-1][1]["valid/top1"]
    assert 0.0 <= top1 <= 1.0
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
    # The final evaluation: the multi-view test of every test video, written to a file.
    assert result.test_results["num_videos"] == 12
    assert os.path.exists(tmp_path / "eval" / "test_results.json")
    # Rerunning a finished run trains nothing more; evaluate reads the same checkpoint (on the
    # validation videos, one central view each: the numbers of the run's last evaluation).
    again = train.train_and_evaluate(config, str(tmp_path))
    assert again.step == result.step and again.train_history == []
    config.dataset_configs.test_split = "validation"
    results = evaluate.evaluate(config, str(tmp_path))
    assert results["step"] == 6 and results["num_videos"] == 20
    assert results["top1"] == pytest.approx(top1)


@pytest.mark.parametrize("arg", [None, "single_frame", "tiny,single_frame"])
def test_demo_variants_are_valid(arg):
    config = config_lib.complete_config(demo_config(arg))
    ds = config.dataset_configs
    validate_input_shape(config.model, (ds.num_frames, ds.crop_size, ds.crop_size, 3))
    create_model(config.model, 8)


def test_demo_rejects_unknown_argument():
    with pytest.raises(ValueError, match="single_frames"):
        demo_config("single_frames")
