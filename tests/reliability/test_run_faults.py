"""Faults of whole runs, in real `python -m vivit_jax.main` processes: two runs on one workdir,
SIGTERM during the final evaluation, absurd sizes, a failing input pipeline, bad labels, and what
a run prints (quiet by default; a failure's last line is the error)."""

import os
import resource
import signal
import subprocess
import sys

import pytest

from tests.reliability.conftest import REPO, TIMEOUT, Launch

BASE = ["--config=configs/demo.py:tiny"]


@pytest.fixture
def launch(session_dir, tiny_tfds, tmp_path):
    """`launch(*args, devices=1) -> Launch` of the tiny demo on the built dataset."""
    counter = iter(range(100))

    def start(*args, devices=1):
        return Launch(
            [*BASE, f"--config.dataset_configs.data_dir={tiny_tfds}", *args],
            devices=devices,
            cache_dir=str(session_dir / "xla_cache"),
            log_path=str(tmp_path / f"run_{next(counter)}.log"),
        )

    return start


def _last_line(run: Launch) -> str:
    return run.output().strip().splitlines()[-1]


def test_a_second_run_on_the_same_workdir_is_refused_at_once(launch, tmp_path):
    workdir = f"--workdir={tmp_path / 'work'}"
    first = launch(workdir, "--config.num_training_steps=12", "--config.checkpoint_steps=1")
    first.wait_for("Training steps 1..12")
    second = launch(workdir)
    assert second.wait(timeout=120) == 1, second.output()[-3000:]
    last = _last_line(second)
    assert "WorkdirBusyError" in last and f"process {first.proc.pid}" in last, last
    assert first.wait() == 0, first.output()[-3000:]
    # A killed holder leaves nothing stuck: the kernel drops the lock with the process.
    longer = ["--config.num_training_steps=30", "--config.resume_mismatch_ok=True"]
    killed = launch(workdir, *longer, "--config.checkpoint_steps=1")
    killed.wait_for("Training steps 13..30")
    killed.proc.send_signal(signal.SIGKILL)
    killed.wait()
    after = launch(workdir, *longer, "--config.checkpoint_steps=1")
    assert after.wait() == 0, after.output()[-3000:]
    assert "Resumed from checkpoint" in after.output()


def test_sigterm_during_the_final_evaluation_then_a_rerun_runs_it(launch, tmp_path):
    workdir = tmp_path / "work"
    slow_test = [  # 12 test batches of 12 views: the final evaluation takes a while.
        f"--workdir={workdir}",
        "--config.dataset_configs.num_test_clips=4",
        "--config.dataset_configs.do_three_spatial_crops=True",
        "--config.dataset_configs.test_batch_size=1",
    ]
    run = launch(*slow_test)
    run.wait_for("Final evaluation of step 6")
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.output()[-3000:]
    assert "Stopped by SIGTERM during the final evaluation" in run.output()
    results = workdir / "eval" / "test_results.json"
    assert not results.exists()

    again = launch(*slow_test)
    assert again.wait() == 0, again.output()[-3000:]
    assert "without its final evaluation; running it now" in again.output()
    assert "Training steps" not in again.output()
    assert results.exists()

    third = launch(*slow_test)
    assert third.wait() == 0, third.output()[-3000:]
    assert "Nothing to do" in third.output()


def _limited_address_space(gib: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))

    return limit


def test_absurd_num_frames_is_refused_before_anything_is_built(tiny_tfds, tmp_path):
    """8 GiB of address space, a million frames: an error naming the key, within seconds."""
    args = [
        sys.executable,
        "-m",
        "vivit_jax.main",
        *BASE,
        f"--config.dataset_configs.data_dir={tiny_tfds}",
        "--config.dataset_configs.num_frames=1000000",
        f"--workdir={tmp_path / 'work'}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "JAX_PLATFORMS": "cpu",
        "VIVIT_JAX_MALLOC": "default",
    }
    proc = subprocess.run(
        args,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_limited_address_space(8),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert "dataset_configs.num_frames=1000000" in last and "config.batch_size=8" in last, last
    assert "Model:" not in output  # Refused before the model was built.


def test_a_huge_batch_is_refused_naming_the_key(tmp_path):
    from tests.training.conftest import tiny_config
    from vivit_jax import config_lib
    from vivit_jax.data import config as data_config

    config = config_lib.complete_config(tiny_config(batch_size=10**9))
    with pytest.raises(ValueError, match=r"config.batch_size=1000000000 .*Lower"):
        data_config.check_host_memory(config)


def test_an_input_pipeline_error_ends_the_process(launch, tmp_path, corrupt_tfds):
    """A corrupt record mid-training: the process exits (no hang), naming the record last."""
    data_dir, path = corrupt_tfds
    run = Launch(
        [
            *BASE,
            f"--config.dataset_configs.data_dir={data_dir}",
            "--config.checkpoint_steps=1",
            f"--workdir={tmp_path / 'work'}",
        ],
        devices=1,
        cache_dir=str(tmp_path / "cache"),
        log_path=str(tmp_path / "corrupt.log"),
    )
    assert run.wait(timeout=TIMEOUT) == 1, run.output()[-3000:]
    last = _last_line(run)
    assert "CorruptVideoError" in last and f"{path}, record 17" in last, last


def test_a_label_outside_the_classes_is_an_error_naming_the_key(launch, tmp_path):
    run = launch(f"--workdir={tmp_path / 'work'}", "--config.dataset_configs.label_offset=100")
    assert run.wait() == 1, run.output()[-3000:]
    last = _last_line(run)
    assert "LabelError" in last and "dataset_configs.label_offset 100" in last, last
    assert "record" in last and "outside [0, 8)" in last
    assert not os.path.exists(tmp_path / "work" / "checkpoints" / "3")


def test_a_demo_run_prints_a_few_lines(launch, tmp_path):
    run = launch(f"--workdir={tmp_path / 'work'}")
    assert run.wait() == 0, run.output()[-3000:]
    lines = run.output().strip().splitlines()
    text = "\n".join(lines)
    assert len(lines) <= 20, text
    assert "orbax" not in text and "logging_writer" not in text and "oneDNN" not in text, text
    assert sum("Saving checkpoint" in line for line in lines) == 2  # Steps 3 and 6.
    assert sum("Step 6/6" in line for line in lines) == 1  # Each summary once.
    assert "test: top-1" in lines[-1]


def test_the_compilation_cache_is_filled_and_reused(launch, tmp_path):
    """`--compilation_cache=DIR` stores the run's compiled programs; a rerun with another
    workdir compiles the same programs and so adds no entry; 'none' stores nothing."""
    cache = tmp_path / "cache"
    first = launch(f"--workdir={tmp_path / 'a'}", f"--compilation_cache={cache}")
    assert first.wait() == 0, first.output()[-3000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) >= 3, entries  # At least the train, eval and multi-view test steps.
    again = launch(f"--workdir={tmp_path / 'b'}", f"--compilation_cache={cache}")
    assert again.wait() == 0, again.output()[-3000:]
    assert sorted(p.name for p in cache.iterdir()) == entries
    off = launch(f"--workdir={tmp_path / 'c'}", "--compilation_cache=none")
    assert off.wait() == 0, off.output()[-3000:]
    assert sorted(p.name for p in cache.iterdir()) == entries


def test_the_compilation_cache_directory():
    from vivit_jax.compilation_cache import directory as compilation_cache_dir

    assert compilation_cache_dir("none") is None and compilation_cache_dir("") is None
    assert compilation_cache_dir("~/c") == os.path.expanduser("~/c")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", {**env, "VIVIT_JAX_CACHE_DIR": "/x"})
        assert compilation_cache_dir(None) == "/x/jax_cache"
        mp.setattr(os, "environ", {**env, "JAX_COMPILATION_CACHE_DIR": "/y"})
        assert compilation_cache_dir(None) == "/y"


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config=configs/missing.py", "No config file 'configs/missing.py'"),
        ("--config=vivit_jax/__init__.py", "defines no get_config()"),
        ("--config.dataset_configs.prefetch=-3", "dataset_configs.prefetch=-3"),
        ("--config.num_trainig_steps=2", "Did you mean 'config.num_training_steps'?"),
    ],
)
def test_a_bad_config_flag_is_one_clear_line(tiny_tfds, tmp_path, flag, message):
    args = [*BASE, f"--config.dataset_configs.data_dir={tiny_tfds}", flag]
    if flag.startswith("--config="):
        args = [flag]
    proc = subprocess.run(
        [sys.executable, "-m", "vivit_jax.main", *args, f"--workdir={tmp_path}"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert message in output, output
    assert "Traceback" not in output, output
