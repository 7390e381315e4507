"""Train-state checkpoints: an orbax `CheckpointManager` at `<workdir>/checkpoints/<step>/`.

Each checkpoint has two items:
  state  the `TrainState` pytree (`step`, `params`, `opt_state`), saved with orbax's standard
         handler; `vivit_jax.checkpoints.load_params` reads its `params` without this code.
  meta   JSON: `{"step", "data_position", "checksums", "config"}`; the data position is the
         number of train batches consumed, which is the step (the input pipeline resumes at any
         step); `checksums` holds two 32-bit sums of every array's bits (`vivit_jax.checkpoints.checksums`);
         `config` is `config_fingerprint(config)`, the keys that define the experiment.

What is damage and what is an error (see docs/guarantees.md):
  * A save cut short by a kill is never listed: orbax writes into a temporary directory and
    renames it when complete.
  * Damage — a `meta` that is missing, not JSON or for another step; arrays that cannot be
    decoded; arrays whose checksums differ from those written — sets the checkpoint aside
    (renamed `<step>.damaged-<time>`, never deleted) and the one before it is used.
  * Everything else stops with an error naming the checkpoint and changes nothing on disk:
    files that cannot be read (permissions), parameters of another model, the state of another
    optimiser (unless the run allows a new optimiser state), another experiment's config.
  * A failed save (disk full) raises `CheckpointSaveError` naming its own step, as soon as the
    loop checks (every step), and leaves the earlier checkpoints as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from vivit_jax.checkpoints import checksums
from vivit_jax.checkpoints.fingerprint import config_fingerprint, fingerprint_diff

META_FILE = os.path.join("meta", "metadata")  # Where orbax's JsonCheckpointHandler writes `meta`.


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); earlier checkpoints are intact."""


class CheckpointShapeError(ValueError):
    """A checkpoint's parameters do not have this model's names and shapes."""


class ConfigMismatchError(ValueError):
    """The workdir's checkpoints belong to an experiment with a different config."""


class CheckpointStructureError(ValueError):
    """A checkpoint's optimiser state does not have this optimiser's structure."""


class CheckpointAccessError(PermissionError):
    """A checkpoint's files cannot be read (permissions): an error, never damage."""


class CheckpointDamagedError(ValueError):
    """A checkpoint's files are missing, truncated or altered (checksums differ)."""


@dataclasses.dataclass
class Restored:
    """What `Checkpointer.restore_newest` returns.

    Attributes:
      state: The `TrainState`, placed as the abstract state asked.
      step: Its step.
      meta: Its `meta` item.
      new_optimizer: True when only the parameters were restored and the optimiser state is
        new (the checkpoint's optimiser state has another structure; `allow_new_optimizer`).
    """

    state: Any
    step: int
    meta: dict
    new_optimizer: bool = False


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _shapes(tree) -> dict[str, tuple]:
    return {
        checksums.key_path(p): tuple(x.shape)
        for p, x in jax.tree.leaves_with_path(tree)
        if hasattr(x, "shape")
    }


def _tree_differences(want: dict, have: dict, now: str) -> list[str]:
    problems = [
        f"{k}: checkpoint {have[k]}, {now} {want[k]}"
        for k in want
        if k in have and have[k] != want[k]
    ]
    problems += [f"{k}: not in the checkpoint" for k in want if k not in have]
    problems += [f"{k}: in the checkpoint only" for k in have if k not in want]
    return problems


def _shown(problems: list[str], n: int = 5) -> str:
    more = f"; ... ({len(problems)} in all)" if len(problems) > n else ""
    return "; ".join(problems[:n]) + more


def _not_damage(error: BaseException) -> bool:
    """Failures that say nothing about the files: out of memory, interrupts, permissions."""
    if isinstance(error, (MemoryError, KeyboardInterrupt, SystemExit, PermissionError)):
        return True
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "PERMISSION_DENIED" in text


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
        self._pending: int | None = None  # The step of the save in flight.
        self._failed = False

    # -----------------------------------------------------------------------------------------
    # Which checkpoints exist.

    def saved_steps(self) -> list[int]:
        """Completed steps on disk, oldest first (a save in progress or cut short is not
        listed; a checkpoint set aside is not either)."""
        try:
            return sorted(ocp.step.checkpoint_steps(self.directory))
        except (OSError, ValueError):
            return []

    def latest_step(self) -> int | None:
        steps = self.saved_steps()
        return steps[-1] if steps else None

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    # -----------------------------------------------------------------------------------------
    # Saving.

    def _save_failed(self, step, error: BaseException) -> CheckpointSaveError:
        self._failed = True
        done = [s for s in self.saved_steps() if s != step]
        previous = (
            f"The previous checkpoint (step {done[-1]}) is intact; rerunning resumes from it."
            if done
            else "No earlier checkpoint exists."
        )
        cause = getattr(error, "strerror", None) or str(error).strip().splitlines()[-1]
        return CheckpointSaveError(
            f"Saving checkpoint {step} to {self.directory} failed: {cause}. {previous} Free disk "
            "space (or point --workdir elsewhere) and rerun the same command."
        )

    def save(self, state, step: int, *, force: bool = True, config=None) -> None:
        """Starts an asynchronous save of `state` (arrays are copied off device first).

        `meta` holds the step, the data position, the checksum of every array and, with
        `config`, its `config_fingerprint`.

        Raises:
          CheckpointSaveError: naming the step, when the previous asynchronous save failed (it
            is reported before this one starts) or this one fails to start.
        """
        self.wait()
        meta = {
            "step": int(step),
            "data_position": int(step),
            "checksums": checksums.state_checksums(state),
        }
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
            raise self._save_failed(step, e) from None
        logging.info("Saving checkpoint %d to %s.", step, self.directory)

    def check(self) -> None:
        """Raises `CheckpointSaveError` (naming its step) if the save in flight has failed."""
        if self._pending is not None and not self._manager.is_saving_in_progress():
            self.wait()  # Finished: returns at once, or raises the failure.

    def wait(self) -> None:
        """Blocks until every pending save is on disk.

        Raises:
          CheckpointSaveError: naming the step, when the last asynchronous save failed.
        """
        if self._pending is None:
            return
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:
            raise self._save_failed(self._pending, e) from None
        finally:
            self._pending = None

    def close(self, *, raise_errors: bool = True) -> None:
        """Waits for the pending save and closes the manager.

        Args:
          raise_errors: False while another error is being raised: a failed pending save is
            then logged, not raised over it. After a reported save failure nothing is raised.
        """
        try:
            if not self._failed:
                self.wait()
        except CheckpointSaveError as e:
            if raise_errors:
                self._close_quietly()
                raise
            logging.error("%s", e)
        if self._failed:
            self._close_quietly()
        else:
            self._manager.close()

    def _close_quietly(self) -> None:
        try:
            with _quiet_orbax():
                self._manager.close()
        except Exception:  # noqa: BLE001 - the failure itself was reported already.
            pass

    # -----------------------------------------------------------------------------------------
    # Reading.

    def read_meta(self, step: int) -> dict:
        """The `meta` item of checkpoint `step` (no arrays are read).

        Raises:
          CheckpointAccessError: the file exists but cannot be read.
          CheckpointDamagedError: it is missing, not JSON, or not for this step.
        """
        path = os.path.join(self.step_dir(step), META_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except PermissionError as e:
            raise self._access_error(step, path, e) from None
        except FileNotFoundError:
            raise CheckpointDamagedError(f"its meta file {path} is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointDamagedError(f"its meta file {path} is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("step") != step or "data_position" not in meta:
            raise CheckpointDamagedError(
                f"its meta file {path} does not describe step {step} ({str(meta)[:200]})"
            )
        return meta

    def _access_error(self, step: int, path: str, error: OSError) -> CheckpointAccessError:
        return CheckpointAccessError(
            f"Checkpoint {step} in {self.directory} cannot be read: {path}: "
            f"{error.strerror or error}. Nothing was set aside or changed. Make it readable "
            f"(e.g. `chmod -R u+rwX {self.step_dir(step)}`) or run as its owner, then rerun the "
            "same command."
        )

    def _check_access(self, step: int) -> None:
        """Opens every file and folder of checkpoint `step`: unreadable ones are an error."""
        top = self.step_dir(step)
        for root, _, files in os.walk(top, onerror=lambda e: self._raise_access(step, e)):
            for name in files:
                path = os.path.join(root, name)
                try:
                    with open(path, "rb"):
                        pass
                except PermissionError as e:
                    raise self._access_error(step, path, e) from None

    def _raise_access(self, step: int, error: OSError) -> None:
        if isinstance(error, PermissionError):
            raise self._access_error(step, error.filename or self.step_dir(step), error)

    def newest_meta(self) -> tuple[int, dict] | None:
        """`(step, meta)` of the newest checkpoint whose `meta` is readable; checkpoints before
        it with a damaged `meta` are set aside. None when there is none.

        Raises:
          CheckpointAccessError: a `meta` file cannot be read (permissions).
        """
        for step in reversed(self.saved_steps()):
            try:
                return step, self.read_meta(step)
            except CheckpointDamagedError as e:
                self._set_aside(step, str(e))
        return None

    def check_config(self, config, step: int, meta: dict | None = None, *, mismatch_ok=False):
        """Compares checkpoint `step`'s config fingerprint with `config`'s.

        Raises:
          ConfigMismatchError: naming the differing keys, unless `mismatch_ok`.
        """
        saved = (meta if meta is not None else self.read_meta(step)).get("config")
        if saved is None:
            logging.warning("Checkpoint %d has no config fingerprint; not checked.", step)
            return
        from vivit_jax import config_lib  # Not at the top: config_lib imports the models.

        defaults = config_fingerprint(config_lib.default_config())
        diff = fingerprint_diff(saved, config_fingerprint(config), defaults)
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

    def _stored_shapes(self, step: int) -> dict:
        """`{'params': {path: shape}, 'opt_state': {...}}` from the metadata of the `state`."""
        try:
            stored = self._manager.item_metadata(step).state
            stored = getattr(stored, "tree", stored)
            return {k: _shapes(stored[k]) for k in ("params", "opt_state")}
        except Exception as e:
            if _not_damage(e):
                raise
            raise CheckpointDamagedError(f"its array metadata cannot be read ({e})") from None

    def _check_params(self, step: int, abstract_params, stored: dict) -> None:
        problems = _tree_differences(_shapes(abstract_params), stored["params"], "model")
        if problems:
            raise CheckpointShapeError(
                f"Checkpoint {step} in {self.directory} does not fit this model (another variant "
                f"or size?): {_shown(problems)}. Use a fresh --workdir, or fine-tune from it with "
                "config.init_from.checkpoint_path."
            )

    def restore_newest(
        self, abstract_state, *, allow_new_optimizer: bool = False, new_opt_state=None
    ):
        """Restores the newest healthy checkpoint; `Restored`, or None when there is none.

        A checkpoint is damaged when its `meta` is missing or invalid, its arrays cannot be
        decoded, or their checksums differ from those stored at save time: it is renamed
        `<step>.damaged-<time>` (never deleted) and the one before it is tried. Anything else
        is an error and changes nothing on disk.

        Args:
          abstract_state: `jax.ShapeDtypeStruct`s (with `.sharding`) of the `TrainState`.
          allow_new_optimizer: when the checkpoint's optimiser state has another structure
            (the optimiser was changed), restore the parameters and start
            `new_opt_state(params, step)` instead of failing.
          new_opt_state: `(params, step) -> opt_state` (its step counters at `step`, so that the
            schedule goes on), needed with `allow_new_optimizer`.

        Raises:
          CheckpointShapeError: the parameters do not fit the model.
          CheckpointStructureError: the optimiser state does not fit and not
            `allow_new_optimizer`.
          CheckpointAccessError: files that cannot be read.
        """
        for step in reversed(self.saved_steps()):
            try:
                return self._restore_step(step, abstract_state, allow_new_optimizer, new_opt_state)
            except CheckpointDamagedError as e:
                self._set_aside(step, str(e))
        return None

    def _restore_step(self, step, abstract_state, allow_new_optimizer, new_opt_state) -> Restored:
        meta = self.read_meta(step)
        self._check_access(step)
        stored = self._stored_shapes(step)
        self._check_params(step, abstract_state.params, stored)
        opt_problems = _tree_differences(
            _shapes(abstract_state.opt_state), stored["opt_state"], "this optimiser"
        )
        if opt_problems and not allow_new_optimizer:
            raise CheckpointStructureError(
                f"Checkpoint {step} in {self.directory} holds the state of another optimiser "
                f"(or optimiser settings): {_shown(opt_problems, 3)}. To keep its parameters and "
                "start a new optimiser state, rerun with --config.resume_mismatch_ok=True; or "
                "use a fresh --workdir."
            )
        try:
            if opt_problems:
                state = self._restore_params(step, abstract_state)
            else:
                state = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                ).state
        except Exception as e:
            if _not_damage(e):
                raise
            raise CheckpointDamagedError(f"its arrays cannot be read ({e})") from None
        self._verify(step, meta, state, params_only=bool(opt_problems))
        if opt_problems:
            logging.warning(
                "Checkpoint %d holds another optimiser's state (%s): restored its parameters "
                "and step, and started a new optimiser state.",
                step,
                _shown(opt_problems, 3),
            )
            state = state.replace(opt_state=new_opt_state(state.params, state.step))
        return Restored(state, step, meta, new_optimizer=bool(opt_problems))

    def _restore_params(self, step: int, abstract_state):
        """The `step` and `params` of checkpoint `step`, onto `abstract_state`'s shardings."""
        wanted = {"step": abstract_state.step, "params": abstract_state.params}
        restore_args = ocp.checkpoint_utils.construct_restore_args(wanted)
        restored = ocp.PyTreeCheckpointer().restore(
            os.path.join(self.step_dir(step), "state"),
            args=ocp.args.PyTreeRestore(
                item=wanted, restore_args=restore_args, partial_restore=True
            ),
        )
        return abstract_state.replace(step=restored["step"], params=restored["params"])

    def _verify(self, step: int, meta: dict, state, params_only: bool) -> None:
        stored = meta.get("checksums")
        if stored is None:
            logging.warning(
                "Checkpoint %d was written without checksums; its arrays are not verified.", step
            )
            return
        computed = checksums.state_checksums(state, params_only=params_only)
        if params_only:
            stored = {k: v for k, v in stored.items() if k in computed}
        bad = checksums.mismatches(stored, computed)
        if bad:
            raise CheckpointDamagedError(
                f"the checksums of {len(bad)} arrays differ from those written at save time "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
            )

    def _set_aside(self, step: int, why: str) -> None:
        """Renames a damaged checkpoint `<step>.damaged-<time>` (never deletes it)."""
        path = self.step_dir(step)
        target = f"{path}.damaged-{int(time.time())}"
        logging.error(
            "Checkpoint %d is damaged: %s. Setting it aside as %s and trying the one before.",
            step,
            why,
            target,
        )
        if jax.process_index() == 0:
            os.rename(path, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"vivit_set_aside_{step}")
        self._manager.reload()


@contextlib.contextmanager
def _quiet_orbax():
    """Silences orbax's logging while a failed manager is closed (its shutdown logs the
    failure again, at length)."""
    absl_logger = logging.get_absl_logger()
    level = absl_logger.level
    absl_logger.setLevel(100)  # Above CRITICAL: nothing.
    try:
        yield
    finally:
        absl_logger.setLevel(level)
