"""Two real processes (jax.distributed on 127.0.0.1, 4 CPU devices each, gloo collectives) train
configs/demo.py:tiny like one process with 8 devices, stop together on a SIGTERM that only one of
them receives, and resume from the checkpoint both restore."""

import os
import re

import numpy as np

from tests.reliability.conftest import final_params, free_port, max_abs_diff, read_losses


def _launch_pair(launcher, workdir):
    port = free_port()
    return [launcher(workdir, devices=4, process=(i, 2, port)) for i in range(2)]


def test_two_processes_match_one_process_and_resume_together(launcher, reference_run, tmp_path):
    workdir = str(tmp_path / "two_processes")
    first = _launch_pair(launcher, workdir)
    for i, run in enumerate(first):  # Each process decodes only its half of every batch.
        run.wait_for(
            f"Process {i} of 2 reads rows [{4 * i}, {4 * i + 4}) of each global batch of 8"
        )
    first[1].wait_for("Saving checkpoint 1 ")
    first[1].proc.send_signal(15)  # SIGTERM to process 1 only: both must stop at one step.
    assert [run.wait() for run in first] == [0, 0], first[1].output()[-3000:]
    stopped = [re.search(r"Stopped by SIGTERM after step (\d+)", run.output()) for run in first]
    assert all(stopped), [run.output()[-2000:] for run in first]
    stop_step = int(stopped[0].group(1))
    assert int(stopped[1].group(1)) == stop_step < 6
    # The checkpoint of the stop step is written once (one directory, no leftovers).
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == [
        str(s) for s in range(1, stop_step + 1)
    ]

    second = _launch_pair(launcher, workdir)
    assert [run.wait() for run in second] == [0, 0], second[0].output()[-3000:]
    for run in second:
        assert f"Resumed from checkpoint {stop_step}" in run.output()

    # Same parameters and losses as the one-process, 8-device run.
    diff = max_abs_diff(final_params(workdir), final_params(reference_run))
    print(f"two processes vs one: stop step {stop_step}, parameter max |diff| {diff:.2e}")
    assert diff < 1e-5
    ref_losses, losses = read_losses(reference_run), read_losses(workdir)
    assert sorted(losses) == sorted(ref_losses)
    np.testing.assert_allclose(
        [losses[s] for s in sorted(losses)], [ref_losses[s] for s in sorted(losses)], rtol=1e-5
    )
    # Only process 0 writes summaries: one event file per launch, named with its pid.
    events = sorted(f for f in os.listdir(workdir) if f.startswith("events.out.tfevents"))
    assert len(events) == 2
    pids = {str(first[0].proc.pid), str(second[0].proc.pid)}
    assert {re.search(r"\.(\d+)\.v2$", e).group(1) for e in events} == pids
