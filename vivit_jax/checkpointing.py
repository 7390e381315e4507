"""Train-state checkpoints: an orbax `CheckpointManager` at `<workdir>/checkpoints/<step>/`.

Each checkpoint has two items:
  state  the `TrainState` pytree (`step`, `params`, `opt_state`), saved with orbax's standard
         handler; `vivit_jax.checkpoints.load_params` reads its `params` without this code.
  meta   JSON: `{"step": ..., "data_position": ...}`; the data position is the number of train
         batches consumed, which is the step (the input pipeline resumes at any step).
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from absl import logging


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
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state, step: int, *, force: bool = True) -> None:
        """Starts an asynchronous save of `state` (arrays are copied off device first)."""
        meta = {"step": int(step), "data_position": int(step)}
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )
        logging.info("Saving checkpoint %d to %s.", step, self.directory)

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
        """Blocks until every pending save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree, shardings):
    """`jax.ShapeDtypeStruct`s of `tree` (arrays or structs) placed as `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
