"""Interrupted builds leave no partial folder: real build processes stopped by real signals.

The child builds moving_shapes/tiny with a slowed renderer (a slow input), so that the build is
caught in the middle: after TFDS has written the train shards into its `incomplete.*` folder.
"""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow_datasets as tfds

from vivit_jax.data import build as build_lib
from vivit_jax.data.builders import build_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COUNTS = {"train": 40, "validation": 20, "test": 12}

CHILD = textwrap.dedent(
    """
    import sys, time
    from vivit_jax.data import build as build_lib
    from vivit_jax.data.builders import moving_shapes

    render = moving_shapes.render

    def slow_render(*args, **kwargs):
        time.sleep(float(sys.argv[2]))
        return render(*args, **kwargs)

    moving_shapes.render = slow_render
    build_lib.main(["--dataset=moving_shapes/tiny", f"--data_dir={sys.argv[1]}"])
    """
)


def start_build(tmp_path, delay=0.03):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "tfds"), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def partial_folders(tmp_path):
    return glob.glob(str(tmp_path / "tfds" / "moving_shapes" / "tiny" / "incomplete.*"))


def wait_for_partial(tmp_path, proc, shards=True):
    """Waits until the build is under way (its train shards written, if `shards`)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        found = partial_folders(tmp_path)
        if found and (not shards or glob.glob(os.path.join(found[0], "*train.tfrecord*"))):
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the build ended (rc {proc.returncode}) first: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the build did not start in 120 s")


def test_build_killed_mid_build_is_cleaned_by_the_next_build(tmp_path, capsys):
    proc = start_build(tmp_path)
    partial = wait_for_partial(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert partial_folders(tmp_path) == [partial]  # What SIGKILL leaves.
    builder = build_lib.build("moving_shapes/tiny", data_dir=str(tmp_path / "tfds"))
    out = capsys.readouterr().out
    assert f"removed the leftover of an interrupted build: {partial} (" in out
    assert partial_folders(tmp_path) == []
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == COUNTS


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_build_stopped_by_a_signal_removes_its_own_folder(tmp_path, sig):
    proc = start_build(tmp_path)
    wait_for_partial(tmp_path, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    assert partial_folders(tmp_path) == []
    assert not os.path.exists(tmp_path / "tfds" / "moving_shapes" / "tiny" / "1.0.0")


def test_build_waits_for_a_running_build_and_never_touches_its_folder(tmp_path, capsys):
    proc = start_build(tmp_path)
    partial = wait_for_partial(tmp_path, proc, shards=False)
    running = tfds.builder("moving_shapes/tiny", data_dir=str(tmp_path / "tfds"))
    build_dir.remove_leftovers(running)  # A running build's folder is not a leftover.
    assert partial_folders(tmp_path) == [partial]
    builder = build_lib.build("moving_shapes/tiny", data_dir=str(tmp_path / "tfds"))
    assert f"waiting for the build by process {proc.pid} to finish" in capsys.readouterr().out
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Built moving_shapes/tiny/1.0.0" in out
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == COUNTS
    assert partial_folders(tmp_path) == []
