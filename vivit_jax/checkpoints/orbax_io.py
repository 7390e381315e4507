"""orbax checkpoints, this project's training layout: `<workdir>/checkpoints/<step>/state/`.

`read_orbax` restores only the `params` of the item `state` (no optimizer-state structure is
needed); `save_params_orbax` writes parameters the way the training code does. Both take
relative or absolute paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vivit_jax.checkpoints import trees
from vivit_jax.checkpoints.trees import CheckpointError

ORBAX_ITEM = "state"
ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "_sharding")


def orbax_steps(directory: str) -> list[int]:
    """The steps of a CheckpointManager directory: `<step>/` folders that hold a checkpoint."""
    steps = []
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.isdigit() and os.path.isdir(full):
            inner = set(os.listdir(full))
            if inner & set(ORBAX_MARKERS) or ORBAX_ITEM in inner:
                steps.append(int(name))
    return sorted(steps)


def read_orbax_state(path: str) -> tuple[dict, str]:
    """Restores only the parameter trees of an orbax checkpoint, without its optimizer-state
    structure: `(restored tree, item directory)`; `formats.read_orbax` finds the params in it.

    `path` may be a CheckpointManager directory (`<workdir>/checkpoints`, latest step is read),
    a workdir holding `checkpoints/`, one step directory (`.../checkpoints/<step>`), or the item
    directory itself (`.../<step>/state`); relative or absolute.
    """
    import orbax.checkpoint as ocp

    # orbax reads no metadata through a relative path (it reports an empty tree), so every
    # path is made absolute here, where paths enter orbax.
    item_dir = _orbax_item_dir(os.path.abspath(path))
    checkpointer = ocp.PyTreeCheckpointer()
    try:
        metadata = checkpointer.metadata(item_dir)
        tree_meta = getattr(getattr(metadata, "item_metadata", metadata), "tree", None)
        if tree_meta is None:
            tree_meta = metadata.item_metadata
    except Exception as e:
        raise CheckpointError(f"Cannot read orbax metadata in {item_dir!r}: {e!r}") from e
    tree_meta = _plain(tree_meta)
    for sub in (("params",), ("optimizer", "target"), ("opt", "target")):
        if trees.has_path(tree_meta, sub):
            wanted = {sub[0]: _prune(tree_meta, sub)}
            break
    else:
        raise CheckpointError(
            f"No 'params' in orbax checkpoint {item_dir!r}; its top-level fields are "
            f"{sorted(tree_meta)[:10] if isinstance(tree_meta, Mapping) else type(tree_meta)}."
        )
    import jax

    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    try:
        restored = checkpointer.restore(
            item_dir,
            args=ocp.args.PyTreeRestore(
                item=wanted, restore_args=restore_args, partial_restore=True
            ),
        )
    except Exception as e:
        raise CheckpointError(
            f"Cannot restore params from orbax checkpoint {item_dir!r}: incomplete or corrupt "
            f"({e!r})."
        ) from e
    return restored, item_dir


def _orbax_item_dir(path: str) -> str:
    if not os.path.isdir(path):
        raise CheckpointError(f"An orbax checkpoint is a directory; {path!r} is a file.")
    entries = set(os.listdir(path))
    if "_METADATA" in entries or "manifest.ocdbt" in entries:
        return path
    if ORBAX_ITEM in entries:
        return os.path.join(path, ORBAX_ITEM)
    if "checkpoints" in entries and not orbax_steps(path):
        return _orbax_item_dir(os.path.join(path, "checkpoints"))
    steps = orbax_steps(path)
    if not steps:
        raise FileNotFoundError(
            f"No orbax checkpoint in {path!r}: expected '<step>/{ORBAX_ITEM}/' sub-directories."
        )
    return _orbax_item_dir(os.path.join(path, str(steps[-1])))


def _plain(meta: Any) -> Any:
    """Orbax metadata -> nested dicts (lists and tuples become dicts keyed '0', '1', ...)."""
    if isinstance(meta, Mapping):
        return {str(k): _plain(v) for k, v in meta.items()}
    if isinstance(meta, (list, tuple)) and not hasattr(meta, "shape"):
        return {str(i): _plain(v) for i, v in enumerate(meta)}
    return meta


def _prune(meta: Mapping[str, Any], sub: tuple[str, ...]) -> Any:
    node = trees.get_path(meta, sub)
    for key in reversed(sub[1:]):
        node = {key: node}
    return node


def save_params_orbax(
    directory: str | os.PathLike,
    params: Mapping[str, Any],
    step: int = 0,
    *,
    overwrite: bool = False,
) -> str:
    """Writes `params` the way the training code does: `<directory>/<step>/state/` via
    `orbax.checkpoint.CheckpointManager`, item `state` = {'params': ..., 'step': ...}.

    Used by tests and by `python -m vivit_jax.checkpoints.convert --to=orbax`.

    Returns:
      The step directory written, `<directory>/<step>` (absolute).

    Raises:
      FileExistsError: `directory` already holds `step` and `overwrite` is False.
      CheckpointError: orbax did not write the step.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    state = {"params": trees.to_numpy_tree(params), "step": np.asarray(step, np.int64)}
    manager = ocp.CheckpointManager(directory, item_names=(ORBAX_ITEM,))
    try:
        if step in manager.all_steps():
            if not overwrite:
                raise FileExistsError(
                    f"{directory!r} already holds orbax step {step}; pass overwrite=True to "
                    "replace it."
                )
            manager.delete(step)
        # Without force, CheckpointManager skips (returning False) any step that is not after
        # the latest one the directory holds.
        saved = manager.save(
            step,
            args=ocp.args.Composite(**{ORBAX_ITEM: ocp.args.StandardSave(state)}),
            force=True,
        )
        manager.wait_until_finished()
    finally:
        manager.close()
    written = os.path.join(directory, str(step))
    if not saved or not os.path.isdir(os.path.join(written, ORBAX_ITEM)):
        raise CheckpointError(f"orbax did not write step {step} to {directory!r}.")
    return written
