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

Rerunning a `train` command on the same workdir resumes from its latest checkpoint. Several hosts:
start the same command on each, adding `--jax_distributed` (auto-detected cluster, e.g. TPU pods
and SLURM) or `--coordinator_address=host:port --num_processes=N --process_id=i`.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:arg]).", lock_config=True
)
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


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _initialize_distributed()
    import jax

    from vivit_jax import cpu_tuning

    cpu_tuning.keep_freed_memory()
    if jax.default_backend() == "cpu":
        logging.info(
            "malloc: %s (%s=%s to choose another).",
            cpu_tuning.malloc_in_use(),
            cpu_tuning.MALLOC_ENV,
            "|".join(cpu_tuning.MALLOC_CHOICES),
        )
    if _MODE.value == "train":
        if _CHECKPOINT.value:
            raise app.UsageError(
                "--checkpoint is for --mode=evaluate; to fine-tune, set "
                "--config.init_from.checkpoint_path."
            )
        from vivit_jax import train

        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
        from vivit_jax import eval_results, evaluate

        results = evaluate.evaluate(
            _CONFIG.value,
            _WORKDIR.value,
            checkpoint=_CHECKPOINT.value,
            config_file=config_flags.get_config_filename(flags.FLAGS["config"]),
        )
        print(eval_results.summary_line(results, results["results_file"]))


if __name__ == "__main__":
    from vivit_jax import cpu_tuning

    cpu_tuning.restart_with_fast_malloc()  # first: it may restart this process (CPU runs)
    app.run(main)
