"""Train-state checkpoints: an orbax `CheckpointManager` at `<workdir>/checkpoints/<step>/`.

Each checkpoint has two items:
  state  the `TrainState` pytree (`step`, `params`, `opt_state`), saved with orbax's standard
         handler; `vivit_jax.checkpoints.load_params` reads its `params` without this code.
  meta   JSON: `{"step": ..., "data_position": ..., "config": {...}}`; the data position is the
         number of train batches consumed, which is the step (the input pipeline resumes at any
         step); `config` is `config_fingerprint(config)`, the keys that define the experiment.

Crash safety (see docs/guarantees.md): orbax writes a step into a temporary directory and renames
it when complete, so a save cut short by a kill is never listed; a listed checkpoint that cannot
be read is set aside (`restore_latest` falls back to the one before); a failed save (disk full)
raises `CheckpointSaveError` and leaves the earlier checkpoints as they were.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

# The config keys that define an experiment (its maths and data), compared on resume. Logging,
# evaluation, checkpoint cadence, sharding and paths may change between runs of one experiment.
FINGERPRINT_KEYS = (
    "model_name",
    "model",
    "model_dtype_str",
    "dataset_name",
    "dataset_configs",
    "batch_size",
    "rng_seed",
    "optimizer",
    "optimizer_configs",
    "lr_configs",
    "num_training_steps",
    "num_training_epochs",
    "max_grad_norm",
    "l2_decay_factor",
    "label_smoothing",
    "mixup",
)
# dataset_configs keys that are paths or only steer speed or evaluation.
_FINGERPRINT_SKIP = (
    "dataset_configs.data_dir",
    "dataset_configs.base_dir",
    "dataset_configs.num_parallel_calls",
    "dataset_configs.prefetch",
    "dataset_configs.prefetch_to_device",
    "dataset_configs.test_batch_size",
    "dataset_configs.num_test_clips",
    "dataset_configs.do_three_spatial_crops",
    "dataset_configs.do_multicrop_test",
    "dataset_configs.log_test_epochs",
    "dataset_configs.examples_per_subset",
)


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); earlier checkpoints are intact."""


class CheckpointShapeError(ValueError):
    """A checkpoint's parameters do not have this model's names and shapes."""


class ConfigMismatchError(ValueError):
    """The workdir's checkpoints belong to an experiment with a different config."""


def _flatten(value, prefix: str, out: dict) -> None:
    if hasattr(value, "items"):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif prefix not in _FINGERPRINT_SKIP:
        # JSON text, so tuples and lists (and a value read back from JSON) compare equal.
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def config_fingerprint(config) -> dict[str, str]:
    """`{'model.hidden_size': '64', ...}`: the `FINGERPRINT_KEYS` of `config`, flattened."""
    out: dict[str, str] = {}
    for key in FINGERPRINT_KEYS:
        value = config[key]
        _flatten(value.to_dict() if hasattr(value, "to_dict") else value, key, out)
    return out


def fingerprint_diff(saved: dict, current: dict) -> list[str]:
    """`['key (checkpoint: a, now: b)', ...]` for every key whose value differs."""
    missing = "<absent>"
    return [
        f"{k} (checkpoint: {saved.get(k, missing)}, now: {current.get(k, missing)})"
        for k in sorted(set(saved) | set(current))
        if saved.get(k, missing) != current.get(k, missing)
    ]


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    """Saves and restores `TrainState`s under `<workdir>/checkpoints`.

    Args:
      workdir: The experiment directory.
      max_to_keep: Older checkpoints are deleted.
    """

    def __init__(self, workdir: str, max_to_keep: int = 3):
        self.directory = checkpoint_dir(workdir)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            # Handlers given up front, so a fresh manager can read metadata before restoring.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def _saved_steps(self) -> list[int]:
        """Completed steps on disk (a save in progress or cut short is not listed)."""
        try:
            return sorted(ocp.step.checkpoint_steps(self.directory))
        except (OSError, ValueError):
            return []

    def _save_failed(self, step, error: BaseException) -> CheckpointSaveError:
        done = [s for s in self._saved_steps() if s != step]
        previous = (
            f"The previous checkpoint (step {done[-1]}) is intact; rerunning resumes from it."
            if done
            else "No earlier checkpoint exists."
        )
        return CheckpointSaveError(
            f"Saving checkpoint {step} to {self.directory} failed: {error}. {previous} Free disk "
            "space (or point --workdir elsewhere) and rerun the same command."
        )

    def save(self, state, step: int, *, force: bool = True, config=None) -> None:
        """Starts an asynchronous save of `state` (arrays are copied off device first).

        Args:
          config: when given, its `config_fingerprint` is stored in `meta`.

        Raises:
          CheckpointSaveError: when this save, or the previous asynchronous one, fails.
        """
        meta = {"step": int(step), "data_position": int(step)}
        if config is not None:
            meta["config"] = config_fingerprint(config)
        self._pending = int(step)
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=force,
            )
        except Exception as e:
            raise self._save_failed(step, e) from e
        logging.info("Saving checkpoint %d to %s.", step, self.directory)

    def read_meta(self, step: int) -> dict:
        """The `meta` item of checkpoint `step` (no arrays are read)."""
        return self._manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        ).meta

    def check_config(self, config, step: int, *, mismatch_ok: bool = False) -> None:
        """Compares checkpoint `step`'s config fingerprint with `config`'s.

        Raises:
          ConfigMismatchError: naming the differing keys, unless `mismatch_ok`.
        """
        saved = self.read_meta(step).get("config")
        if saved is None:
            logging.warning("Checkpoint %d has no config fingerprint; not checked.", step)
            return
        diff = fingerprint_diff(saved, config_fingerprint(config))
        if not diff:
            return
        text = "; ".join(diff)
        if mismatch_ok:
            logging.warning("Resuming despite config differences (resume_mismatch_ok): %s", text)
            return
        raise ConfigMismatchError(
            f"{self.directory} holds checkpoints of another experiment (step {step}); these "
            f"config keys differ: {text}. Use a fresh --workdir, or resume anyway with "
            "--config.resume_mismatch_ok=True (arrays must still have the same shapes)."
        )

    def check_shapes(self, abstract_state, step: int) -> None:
        """Raises a ValueError naming the first parameters whose shapes differ (or that exist on
        one side only) between checkpoint `step` and `abstract_state.params`."""
        stored = self._manager.item_metadata(step).state
        stored = getattr(stored, "tree", stored)
        if not hasattr(stored, "get") or stored.get("params") is None:
            return  # Not our layout; orbax's own error will tell.
        # Parameters only: their paths read the same in both trees (plain nested dicts).
        want = {
            _path(p): tuple(x.shape) for p, x in jax.tree.leaves_with_path(abstract_state.params)
        }
        have = {
            _path(p): tuple(x.shape)
            for p, x in jax.tree.leaves_with_path(stored["params"])
            if hasattr(x, "shape")
        }
        problems = [
            f"{k}: checkpoint {have[k]}, model {want[k]}"
            for k in want
            if k in have and have[k] != want[k]
        ]
        problems += [f"{k}: not in the checkpoint" for k in want if k not in have]
        problems += [f"{k}: in the checkpoint, not in the model" for k in have if k not in want]
        if problems:
            shown = "; ".join(problems[:5]) + (
                f"; ... ({len(problems)} in all)" if len(problems) > 5 else ""
            )
            raise CheckpointShapeError(
                f"Checkpoint {step} in {self.directory} does not fit this model (another variant "
                f"or size?): {shown}. Use a fresh --workdir, or fine-tune from it with "
                "config.init_from.checkpoint_path."
            )

    def restore_latest(self, abstract_state):
        """Restores the newest readable checkpoint: `(state, meta)`, or None when there is none.

        A listed checkpoint that fails to read (damaged files) is renamed
        `<step>.unreadable-<time>` and the one before it is tried; shape mismatches are not
        damage and raise (see `check_shapes`).
        """
        for step in reversed(self._saved_steps()):
            try:
                self.check_shapes(abstract_state, step)
                return self.restore(abstract_state, step)
            except CheckpointShapeError:
                raise  # A model that does not fit, not a damaged checkpoint.
            except Exception as e:  # Orbax and TensorStore raise many types for bad files.
                if "shape" in str(e) and "compatible" in str(e):
                    raise
                logging.error("Checkpoint %d is unreadable (%s); trying the previous one.", step, e)
                self._set_aside(step)
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            path = os.path.join(self.directory, str(step))
            os.rename(path, f"{path}.unreadable-{int(time.time())}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"vivit_set_aside_{step}")
        self._manager.reload()

    def restore(self, abstract_state, step: int | None = None):
        """Restores `(state, meta)` at `step` (default: the latest) onto `abstract_state`'s
        shardings (a tree of `jax.ShapeDtypeStruct` with `.sharding`)."""
        step = self.latest_step() if step is None else step
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.meta

    def wait(self) -> None:
        """Blocks until every pending save is on disk.

        Raises:
          CheckpointSaveError: when the last asynchronous save failed.
        """
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._save_failed(getattr(self, "_pending", "?"), e) from e

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree, shardings):
    """`jax.ShapeDtypeStruct`s of `tree` (arrays or structs) placed as `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def _path(key_path) -> str:
    parts = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "/".join(parts)


def per_device_bytes(abstract_state, shardings) -> tuple[int, int]:
    """`(total, largest per device)` bytes of a state placed with `shardings`."""
    total, per_device = 0, {}
    for x, s in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings)):
        itemsize = np.dtype(x.dtype).itemsize
        total += int(np.prod(x.shape)) * itemsize
        for device, index in s.devices_indices_map(tuple(x.shape)).items():
            shard = [len(range(*i.indices(d))) for i, d in zip(index, x.shape)]
            per_device[device] = per_device.get(device, 0) + int(np.prod(shard)) * itemsize
    return total, max(per_device.values(), default=0)
