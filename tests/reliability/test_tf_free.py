"""The training process without TensorFlow: train, evaluate and predict in real processes where
`import tensorflow` (and `import tensorflow_datasets`) raise ImportError, on a built dataset and
on DMVR records, as on an accelerator image that has JAX but no TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.reliability.conftest import REPO, TIMEOUT

STEPS = ["--config.num_training_steps=4", "--config.checkpoint_steps=2"]


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
    """A PYTHONPATH entry under which TensorFlow and TFDS cannot be imported."""
    root = tmp_path_factory.mktemp("no_tensorflow")
    for name in ("tensorflow", "tensorflow_datasets"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed')\n")
    return str(root)


def _run(module, *args, no_tensorflow, cwd=REPO):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([no_tensorflow, REPO]),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "not installed" not in output, output[-4000:]
    return output


def test_the_blocker_blocks(no_tensorflow):
    env = {**os.environ, "PYTHONPATH": no_tensorflow}
    done = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "ImportError" in done.stderr


def test_train_evaluate_and_predict_on_a_built_dataset(tiny_tfds, no_tensorflow, tmp_path):
    from vivit_jax.data.video_io import write_video

    workdir = str(tmp_path / "work")
    base = ["--config=configs/demo.py:tiny", f"--config.dataset_configs.data_dir={tiny_tfds}"]
    _run("vivit_jax.main", *base, *STEPS, f"--workdir={workdir}", no_tensorflow=no_tensorflow)
    with open(os.path.join(workdir, "eval", "test_results.json")) as f:
        assert json.load(f)["num_videos"] == 12
    out = _run(
        "vivit_jax.main",
        "--mode=evaluate",
        *base,
        *STEPS,
        f"--workdir={tmp_path / 'eval'}",
        f"--checkpoint={workdir}",
        no_tensorflow=no_tensorflow,
    )
    assert "test: top-1" in out
    video = str(tmp_path / "clip.mp4")
    frames = np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    write_video(video, frames, fps=12)
    out = _run(
        "vivit_jax.predict",
        "--config=configs/demo.py:tiny",
        f"--config.dataset_configs.data_dir={tiny_tfds}",
        f"--checkpoint={workdir}",
        video,
        no_tensorflow=no_tensorflow,
    )
    assert "Predicted 1 video(s); 0 input(s) failed." in out


def test_train_and_evaluate_on_dmvr_records(tiny_tfds, no_tensorflow, tmp_path):
    """Scenic's DMVR TFRecords, written here from the built dataset (TF-free writer)."""
    from vivit_jax.data import dmvr
    from vivit_jax.data.sources import PreparedDataset, TfdsSource

    dataset = PreparedDataset("moving_shapes/tiny", tiny_tfds)
    tables = {}
    for split in ("train", "validation", "test"):
        source = TfdsSource(dataset, split)
        examples = (
            {"frames": list(f), "label": labels, "name": name}
            for f, labels, name in (source.get(i) for i in range(source.num_examples))
        )
        tables[split] = os.path.basename(
            dmvr.write_records(str(tmp_path / f"{split}.tfrecord"), examples, num_shards=2)
        )
    out = _run(
        "vivit_jax.main",
        "--config=configs/demo.py:tiny",
        "--config.dataset_name=video_tfrecord_dataset",
        f"--config.dataset_configs.base_dir={tmp_path}",
        f"--config.dataset_configs.tables={tables}",
        "--config.dataset_configs.num_classes=8",
        *STEPS,
        f"--workdir={tmp_path / 'work'}",
        no_tensorflow=no_tensorflow,
    )
    assert "Step 4/4" in out and "on 12 videos" in out
