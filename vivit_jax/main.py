r"""Command line: train or evaluate a ViViT config.

    python -m vivit_jax.main --config=configs/demo.py --workdir=/tmp/vivit_demo
    python -m vivit_jax.main --config=configs/demo.py:single_frame --workdir=/tmp/vivit_sf \
        --config.batch_size=16
    python -m vivit_jax.main --mode=evaluate --config=configs/demo.py --workdir=/tmp/vivit_demo
    python -m vivit_jax.main --mode=evaluate --config=... --workdir=/tmp/eval \
        --checkpoint=/ckpt/vivit_base_k400/checkpoint     # Scenic, orbax or HuggingFace

`--mode=evaluate` runs the multi-view test (`vivit_jax.evaluate`) on
`dataset_configs.test_split` with the latest checkpoint of the workdir or `--checkpoint`, writes
`<workdir>/eval/<split>_results.json` (and a confusion-matrix image) and prints one line.

On a CPU with the `cpu` extra installed (`pip install 'vivit_jax[cpu]'`) the CPU backend
(`vivit_jax.backends.cpu`) is used; `VIVIT_JAX_MALLOC=mimalloc` also restarts the process once
with mimalloc as its malloc. `--verbosity=1` shows the libraries' INFO records too.

Compiled programs are kept in JAX's persistent compilation cache (`--compilation_cache`, default
`$VIVIT_JAX_CACHE_DIR/jax_cache`, i.e. ~/.cache/vivit_jax/jax_cache), so a rerun starts its
first step without recompiling.
Rerunning a `train` command on the same workdir resumes from its latest checkpoint. Several hosts:
start the same command on each, adding `--jax_distributed` (auto-detected cluster, e.g. TPU pods
and SLURM) or `--coordinator_address=host:port --num_processes=N --process_id=i`.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from vivit_jax import compilation_cache, config_files

# TensorFlow's C++ INFO lines (its oneDNN notice) are not this program's output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

_CONFIG = config_files.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and summaries.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "What to run.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "--mode=evaluate: a checkpoint (Scenic msgpack, orbax directory, HuggingFace ViViT "
    "directory); default: the latest in the workdir.",
)
_JAX_DISTRIBUTED = flags.DEFINE_bool(
    "jax_distributed", False, "Call jax.distributed.initialize() with auto-detected settings."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: 'host:port'.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")
_COMPILATION_CACHE = flags.DEFINE_string("compilation_cache", None, compilation_cache.FLAG_HELP)

flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value is not None:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif _JAX_DISTRIBUTED.value:
        jax.distributed.initialize()
    else:
        return
    logging.info("Process %d of %d.", jax.process_index(), jax.process_count())


class _OwnRecordsAndWarnings(std_logging.Filter):
    """Passes this package's records and the libraries' warnings and errors, each as its first
    line; drops the libraries' INFO records (orbax logs a dozen per checkpoint, clu echoes every
    summary) and asyncio's echoes of failures already reported ("... never retrieved")."""

    _PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.pathname.startswith(self._PACKAGE):
            return True
        if record.levelno < std_logging.WARNING:
            return False
        message = record.getMessage()
        if record.name == "asyncio" and "never retrieved" in message:
            return False
        if record.exc_info or "\n" in message:  # A library's traceback: its first line.
            record.msg, record.args = message.splitlines()[0][:500] + " [...]", None
            record.exc_info = record.exc_text = None
        return True


def _quiet_libraries() -> None:
    if flags.FLAGS.verbosity >= 1:  # --verbosity=1 shows everything.
        return
    logging.get_absl_handler().addFilter(_OwnRecordsAndWarnings())
    default_hook = sys.excepthook

    def hook(kind, value, tb):
        # After a failed checkpoint write, TensorStore's late callbacks find orbax's event loop
        # closed and print this once per array; the failure itself is reported.
        if kind is RuntimeError and str(value) == "Event loop is closed":
            return
        default_hook(kind, value, tb)

    sys.excepthook = hook


def _is_reported_error(error: BaseException) -> bool:
    """An error this package raised on purpose, with a message meant for the user."""
    if type(error).__module__.startswith("vivit_jax"):
        return True
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_here = tb is not None and tb.tb_frame.f_code.co_filename.startswith(
        _OwnRecordsAndWarnings._PACKAGE
    )
    return raised_here and isinstance(error, (ValueError, OSError, FloatingPointError))


def _fail(error: BaseException) -> None:
    """Makes the error the run's last lines: the message alone for the errors this package
    raises with a message for the user (the traceback too with --verbosity=1), else the
    traceback and then the message."""
    if not _is_reported_error(error) or flags.FLAGS.verbosity >= 1:
        traceback.print_exception(error, file=sys.stderr)
    sys.stderr.write(f"\nerror: {type(error).__name__}: {error}\n")
    sys.stderr.flush()


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    try:
        _run()
    except app.UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - reported, then the exit status says so.
        _fail(e)
        sys.exit(1)


def _run() -> None:
    compilation_cache.enable(_COMPILATION_CACHE.value)
    _initialize_distributed()
    from vivit_jax import backends

    fused = _CONFIG.value.model.attention_implementation == "fused"
    backend = backends.for_platform(fused=fused)
    if _MODE.value == "train":
        if _CHECKPOINT.value:
            raise app.UsageError(
                "--checkpoint is for --mode=evaluate; to fine-tune, set "
                "--config.init_from.checkpoint_path."
            )
        from vivit_jax import train

        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, backend=backend)
    else:
        from vivit_jax import eval_results, evaluate

        results = evaluate.evaluate(
            _CONFIG.value,
            _WORKDIR.value,
            checkpoint=_CHECKPOINT.value,
            config_file=config_flags.get_config_filename(flags.FLAGS["config"]),
            backend=backend,
        )
        print(eval_results.summary_line(results, results["results_file"]))


if __name__ == "__main__":
    from vivit_jax.backends.cpu import tuning

    # Only where VIVIT_JAX_MALLOC asks for it (CPU runs): restarts this process with mimalloc.
    tuning.restart_with_fast_malloc()
    app.run(main)
