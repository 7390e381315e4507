"""`train_and_evaluate(config, workdir)`: data, init / restore / fine-tune, the jitted loop.

One code path for every device count: the train state lives on a `('data', 'model')` mesh with
explicit shardings, `train_step` is jitted once with the state donated, and the input pipeline
delivers global batches split over 'data'. A run resumes from the latest checkpoint in
`<workdir>/checkpoints` at the exact step (data position and rng are functions of the step).

Nothing here imports TensorFlow: the input pipeline and the TensorBoard writer
(`vivit_jax.summaries`) are TF-free.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from vivit_jax import config_lib, eval_results, evaluate, experiment, progress, sharding, steps
from vivit_jax.backends import PLAIN, Backend
from vivit_jax.checkpoints import train_state
from vivit_jax.data import config as data_config
from vivit_jax.experiment import Experiment
from vivit_jax.metrics import summarize
from vivit_jax.summaries import SummaryWriter
from vivit_jax.workdir import WorkdirLock, check_workdir

TRAIN_KEYS = ("inputs", "label", "batch_mask")


@dataclasses.dataclass
class TrainResult:
    """What a run returns (for tests and scripts).

    Attributes:
      state: The final `TrainState`.
      step: The last step run.
      train_history: `[(step, {'train/loss': ...})]`, one entry per train summary.
      eval_history: `[(step, {'valid/top1': ...})]`, one entry per evaluation.
      stopped_early: True when a SIGTERM ended the run before the last step.
      test_results: The final multi-view test (`vivit_jax.evaluate`, also written to
        `<workdir>/eval/<split>_results.json`), or None (no test split, or the run did not
        reach its last step in this call).
      test_history: `[(step, {'test/top1': ...})]`, one entry per periodic multi-view test
        (`dataset_configs.do_multicrop_test`, every `log_test_epochs` epochs before the last
        step; the last step's is `test_results`).
    """

    state: steps.TrainState
    step: int
    train_history: list
    eval_history: list
    stopped_early: bool = False
    test_results: dict | None = None
    test_history: list = dataclasses.field(default_factory=list)


# With several processes, the SIGTERM flags are combined (an all-gather, which waits for the
# step to finish) only at steps where the host waits anyway (summaries, checkpoints) and at least
# this often, so that asynchronous dispatch keeps the devices busy in between.
STOP_SYNC_STEPS = 10


class _StopSignal:
    """Turns SIGTERM into a flag the loop checks after each step (then saves and exits)."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping after this step.")
        self.received = True

    def should_stop(self, sync: bool = True) -> bool:
        """This process's flag; with several processes, all flags (and False unless `sync`)."""
        if jax.process_count() == 1:
            return self.received
        if not sync:
            return False
        from jax.experimental import multihost_utils

        # Every process must leave the loop at the same step.
        flags = multihost_utils.process_allgather(np.array(self.received, np.int32))
        return bool(np.max(flags))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _first_nonfinite(pending) -> tuple[int, float] | None:
    """`(step, loss)` of the first pending step whose loss is NaN or infinite."""
    for step, m in pending:
        loss = float(jax.device_get(m.loss.total))
        if not np.isfinite(loss):
            return step, loss
    return None


def _raise_if_nonfinite(pending, ckpt, last_saved: int | None) -> None:
    bad = _first_nonfinite(pending)
    if bad is None:
        return
    if ckpt is not None:
        ckpt.wait()
    where = f"step {last_saved}" if last_saved else "none saved"
    raise FloatingPointError(
        f"The training loss is {bad[1]} at step {bad[0]}; stopping. The last good checkpoint "
        f"({where}) is intact. Lower lr_configs.base_learning_rate, set max_grad_norm, or "
        "check the input data."
    )


def evaluate_split(exp: Experiment, eval_fn, state, max_steps: int | None) -> dict[str, float]:
    """One pass over the validation split: `{'valid/loss', 'valid/top1', 'valid/top5'}`."""
    merged = None
    for i, batch in enumerate(exp.dataset.valid_iter()):
        if max_steps and i >= max_steps:
            break
        m = eval_fn(state, {k: batch[k] for k in TRAIN_KEYS})
        merged = m if merged is None else merged.merge(m)
    if merged is None:
        raise ValueError("The validation split yielded no batch.")
    return summarize(jax.device_get(merged), "valid")


def compile_steps(exp: Experiment):
    """`(train_fn, eval_fn)`: the steps bound to the experiment and jitted with its shardings."""
    loss_config = steps.LossConfig.from_config(
        exp.config, exp.num_classes, sharding.compute_batch_sharding(exp.mesh)
    )
    repl = sharding.replicated(exp.mesh)
    data = sharding.batch_sharding(exp.mesh)
    train_fn = jax.jit(
        functools.partial(
            steps.train_step,
            model=exp.model,
            tx=exp.tx,
            schedule=exp.schedule,
            loss_config=loss_config,
        ),
        in_shardings=(exp.state_shardings, data, repl),
        out_shardings=(exp.state_shardings, repl),
        donate_argnums=0,
        compiler_options=exp.backend.compiler_options,
    )
    eval_fn = jax.jit(
        functools.partial(steps.eval_step, model=exp.model, loss_config=loss_config),
        in_shardings=(exp.state_shardings, data),
        out_shardings=repl,
        compiler_options=exp.backend.compiler_options,
    )
    return train_fn, eval_fn


def train_and_evaluate(
    config, workdir: str, *, dataset_fn=None, backend: Backend = PLAIN
) -> TrainResult:
    """Trains `config` in `workdir`, evaluating and checkpointing periodically.

    Rerunning on the same workdir resumes from its newest healthy checkpoint; on a workdir whose
    training is finished it runs the final evaluation if its results are missing, else returns.

    Args:
      config: The experiment config (completed and validated here).
      workdir: Checkpoints, TensorBoard events; resumed from when it holds checkpoints.
      dataset_fn: `(config, *, mesh, start_step) -> Dataset`; default
        `vivit_jax.data.get_dataset`.
      backend: What the platform adds (`vivit_jax.backends.for_platform`); plain JAX by default.

    Returns:
      A `TrainResult`.

    Raises:
      ValueError: for a bad config, batch size or workdir.
      WorkdirBusyError: another run holds the workdir.
      FloatingPointError: when the loss becomes NaN or infinite (after the last good
        checkpoint is safely written).
      CheckpointSaveError, CheckpointAccessError, CheckpointShapeError, ConfigMismatchError,
        CheckpointStructureError: see `vivit_jax.checkpoints.train_state`.
    """
    config = config_lib.complete_config(config)
    check_workdir(workdir)
    mesh = sharding.create_mesh(config.sharding.model_axis_size)
    experiment.check_batch_sizes(config, mesh)
    data_config.check_host_memory(config, jax.process_count())
    with WorkdirLock(workdir):
        ckpt = (
            train_state.Checkpointer(workdir, config.max_checkpoints_to_keep)
            if config.checkpoint
            else None
        )
        try:
            result = _train_and_evaluate(
                config, workdir, mesh, ckpt, dataset_fn or experiment.default_dataset_fn, backend
            )
        except BaseException:
            if ckpt:  # Waits for the save in flight: every step before the error is kept.
                ckpt.close(raise_errors=False)
            raise
        if ckpt:
            ckpt.close()
        return result


def _train_and_evaluate(config, workdir, mesh, ckpt, dataset_fn, backend) -> TrainResult:
    newest = ckpt.newest_meta() if ckpt else None
    start_step = newest[0] if newest else 0
    if newest:  # Before any data is read: refuse another experiment's workdir.
        ckpt.check_config(config, *newest, mismatch_ok=config.resume_mismatch_ok)
    dataset = dataset_fn(config, mesh=mesh, start_step=start_step)
    exp = experiment.build_experiment(config, mesh=mesh, dataset=dataset, backend=backend)
    experiment.log_layout(exp)
    lead = jax.process_index() == 0
    writer = SummaryWriter(workdir if (lead and config.write_summary) else None)
    try:
        state, start_step = _resume_or_init(exp, ckpt, start_step, dataset_fn, writer)
        # One compilation of the multi-view step for every test of this run (jit compiles lazily).
        test_fn = (
            evaluate.compile_multiview_step(exp)
            if exp.dataset.meta_data.get("num_test_examples")
            else None
        )
        with _StopSignal() as stop_signal:
            if start_step >= exp.total_steps:
                return _finished(exp, state, start_step, workdir, writer, test_fn, stop_signal)
            result = _train_loop(exp, state, start_step, ckpt, writer, test_fn, stop_signal)
            if result.step == exp.total_steps and not result.stopped_early:
                if ckpt:
                    ckpt.wait()  # The last checkpoint is on disk before its evaluation starts.
                _final_test(exp, result, workdir, writer, test_fn, stop_signal)
        return result
    finally:
        writer.close()


def _resume_or_init(exp, ckpt, start_step: int, dataset_fn, writer):
    """`(state, start_step)`: the newest healthy checkpoint, else a fresh (or fine-tuned) state."""
    restored = None
    if start_step:
        abstract = sharding.abstract_like(exp.abstract_state, exp.state_shardings)
        restored = ckpt.restore_newest(
            abstract,
            allow_new_optimizer=exp.config.resume_mismatch_ok,
            new_opt_state=jax.jit(
                functools.partial(_opt_state_at, exp.tx),
                out_shardings=exp.state_shardings.opt_state,
            ),
        )
    if restored is not None:
        if restored.step != start_step:  # A damaged checkpoint was set aside.
            ckpt.check_config(
                exp.config, restored.step, restored.meta, mismatch_ok=exp.config.resume_mismatch_ok
            )
            start_step = restored.step
            exp.dataset = dataset_fn(exp.config, mesh=exp.mesh, start_step=start_step)
        logging.info(
            "Resumed from checkpoint %d (data position %d).",
            start_step,
            restored.meta["data_position"],
        )
        return restored.state, start_step
    if start_step:  # Every checkpoint was damaged (and set aside): start afresh.
        logging.error(
            "No healthy checkpoint is left in %s; training starts afresh.", ckpt.directory
        )
        exp.dataset = dataset_fn(exp.config, mesh=exp.mesh, start_step=0)
    state = experiment.initial_state(exp)
    experiment.log_model_summary(exp, writer)
    return state, 0


def _opt_state_at(tx, params, step):
    """A new optimiser state whose step counters (the schedule's among them) read `step`."""
    state = tx.init(params)
    return optax.tree_utils.tree_set(state, count=jnp.asarray(step, jnp.int32))


def _final_results_path(exp, workdir: str) -> str:
    return eval_results.results_path(workdir, exp.config.dataset_configs.test_split)


def _finished(exp, state, step: int, workdir, writer, test_fn, stop_signal) -> TrainResult:
    """A rerun of a finished training: runs the final evaluation unless its results exist."""
    result = TrainResult(state=state, step=step, train_history=[], eval_history=[])
    if step > exp.total_steps:
        logging.warning(
            "The workdir's checkpoint %d is past the run's %d steps; nothing to train.",
            step,
            exp.total_steps,
        )
    path = _final_results_path(exp, workdir)
    done = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            done = json.load(f)
    if test_fn is None or (done is not None and done.get("step") == step):
        where = f"; its results are in {path}" if done is not None else ""
        logging.info("Training finished at step %d%s. Nothing to do.", step, where)
        result.test_results = done
        return result
    logging.info("Training finished at step %d without its final evaluation; running it now.", step)
    _final_test(exp, result, workdir, writer, test_fn, stop_signal)
    return result


def _final_test(exp, result: TrainResult, workdir, writer, test_fn, stop_signal) -> None:
    """The final multi-view test; a SIGTERM during it stops it (a rerun runs it again)."""
    if test_fn is not None:
        logging.info(
            "Final evaluation of step %d: the multi-view test of dataset_configs.test_split=%r.",
            result.step,
            exp.config.dataset_configs.test_split,
        )
    try:
        result.test_results = evaluate.final_evaluation(
            exp, result.state.params, workdir, result.step, step_fn=test_fn, stop=stop_signal
        )
    except evaluate.EvaluationInterrupted:
        logging.warning(
            "Stopped by SIGTERM during the final evaluation; training is finished and "
            "checkpointed: rerun the same command to run the evaluation."
        )
        result.stopped_early = True
        return
    if result.test_results is not None:
        writer.write_scalars(result.step, evaluate.multiview_scalars(result.test_results))
        writer.flush()


def _train_loop(
    exp: Experiment, state, start_step: int, ckpt, writer, test_fn, stop_signal
) -> TrainResult:
    """Steps `start_step + 1 .. total` with periodic summaries, evaluations, multi-view tests
    (`test_fn`, when `dataset_configs.do_multicrop_test`) and checkpoints."""
    config, total = exp.config, exp.total_steps
    train_fn, eval_fn = compile_steps(exp)
    log_eval_steps = config.log_eval_steps or exp.steps_per_epoch
    log_summary_steps = config.log_summary_steps or log_eval_steps
    checkpoint_steps = config.checkpoint_steps or log_eval_steps
    ds = config.dataset_configs
    log_test_steps = None  # As the original trainer: every log_test_epochs epochs.
    if ds.do_multicrop_test and test_fn is not None:
        log_test_steps = max(1, round(ds.log_test_epochs * exp.steps_per_epoch))
    elif ds.do_multicrop_test:
        logging.info("dataset_configs.do_multicrop_test: no test videos, so no periodic test.")
    logging.info(
        "Training steps %d..%d (%d per epoch, batch %d, %d devices, mesh %s).",
        start_step + 1,
        total,
        exp.steps_per_epoch,
        config.batch_size,
        exp.mesh.devices.size,
        dict(exp.mesh.shape),
    )
    result = TrainResult(state=state, step=start_step, train_history=[], eval_history=[])
    report = (
        progress.Timing()
    )  # The time share of evaluations and checkpoints, in the summary line.
    periodic = _Periodic(exp, eval_fn, test_fn, writer, report, result, stop_signal)
    if config.eval_at_start and start_step == 0:
        periodic.evaluate(0, state)
    pending, last_saved = [], start_step or None
    last_log = (start_step, time.monotonic())
    for step in range(start_step + 1, total + 1):
        batch = next(exp.dataset.train_iter)
        state, metrics = train_fn(state, {k: batch[k] for k in TRAIN_KEYS}, exp.train_rng)
        pending.append((step, metrics))
        result.state, result.step = state, step
        if ckpt:
            ckpt.check()  # A failed asynchronous save stops the run at once, naming its step.
        if step % log_eval_steps == 0 or step == total:
            periodic.evaluate(step, state)
        if log_test_steps and step % log_test_steps == 0 and step < total:
            periodic.test(step, state)  # The last step's test is the final evaluation.
        sync = (
            step % log_summary_steps == 0
            or step % checkpoint_steps == 0
            or step % STOP_SYNC_STEPS == 0
        )
        stop = step < total and stop_signal.should_stop(sync)
        if step % log_summary_steps == 0 or step == total or stop:
            _raise_if_nonfinite(pending, ckpt, last_saved)
            summary = progress.train_summary(pending, last_log, step, total, report.shares())
            last_log = (step, time.monotonic())
            writer.write_scalars(step, summary)
            result.train_history.append((step, summary))
            pending = []
        if ckpt and (step % checkpoint_steps == 0 or step == total or stop):
            _raise_if_nonfinite(pending, ckpt, last_saved)
            with report.timed("checkpoint"):
                ckpt.save(state, step, config=config)
            last_saved = step
        writer.flush()
        if stop:
            logging.warning(
                "Stopped by SIGTERM after step %d; rerun the same command to resume.", step
            )
            result.stopped_early = True
            break
    return result


class _Periodic:
    """The evaluations inside the loop: the validation split and the periodic multi-view test
    (which a SIGTERM cuts short, so that the checkpoint is written within the grace period)."""

    def __init__(self, exp, eval_fn, test_fn, writer, report, result, stop_signal):
        self.exp, self.eval_fn, self.test_fn = exp, eval_fn, test_fn
        self.writer, self.report, self.result, self.stop_signal = (
            writer,
            report,
            result,
            stop_signal,
        )

    def evaluate(self, step, state):
        with self.report.timed("eval"):
            summary = evaluate_split(self.exp, self.eval_fn, state, self.exp.config.steps_per_eval)
        self.writer.write_scalars(step, summary)
        logging.info(
            "Step %d: valid top-1 %.4f, top-5 %.4f.",
            step,
            summary["valid/top1"],
            summary["valid/top5"],
        )
        self.result.eval_history.append((step, summary))

    def test(self, step, state):
        try:
            with self.report.timed("test"):
                results = evaluate.evaluate_views(
                    self.exp,
                    state.params,
                    checkpoint=f"train state at step {step}",
                    step=step,
                    step_fn=self.test_fn,
                    stop=self.stop_signal,
                )
        except evaluate.EvaluationInterrupted:
            logging.warning("SIGTERM during the multi-view test of step %d: test skipped.", step)
            return
        scalars = evaluate.multiview_scalars(results)
        self.writer.write_scalars(step, scalars)
        logging.info(
            "Step %d: multi-view test top-1 %.4f, top-5 %.4f (%d videos).",
            step,
            scalars["test/top1"],
            scalars["test/top5"],
            results["num_videos"],
        )
        self.result.test_history.append((step, scalars))
