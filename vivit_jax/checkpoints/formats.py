"""Checkpoint readers: ViT `.npz`, big_vision `.npz`, Scenic/Flax msgpack, orbax -> plain trees.

`load_params(path)` detects the format and returns a nested `dict` of `numpy` arrays named and
shaped like Scenic's Flax Linen parameters (REFERENCE §3), whatever the file layout was:

| format        | what users have                                   | where the params are        |
|---------------|---------------------------------------------------|-----------------------------|
| `vit`         | google-research/vision_transformer `.npz`         | flat `/` keys, pre-Linen    |
| `big_vision`  | big_vision `.npz` (training or exported)          | `opt/target/`, `params/`    |
| `scenic`      | Scenic / Flax msgpack `checkpoint[_<step>]`       | `optimizer/target`, `params`|
| `orbax`       | this project's `<workdir>/checkpoints/<step>/`    | item `state`, field `params`|
| `huggingface` | `save_pretrained` directory (see huggingface.py)  | `config.json` + weights     |

The ViT head is renamed `head` -> `output_projection` (Scenic's name) so that every tree speaks
one vocabulary; big_vision's `pos_embedding` (added before the CLS token is concatenated) moves
to `Transformer/posembed_input/pos_embedding` with a zero row for the CLS token, which computes
the same function in Scenic's layout.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from vivit_jax.checkpoints import trees
from vivit_jax.checkpoints.trees import CheckpointError, Tree

FORMATS = ("vit", "big_vision", "scenic", "orbax", "huggingface")
# Scenic's `checkpoint_format` values and friendly aliases.
_FORMAT_ALIASES = {"npz": "vit", "flax": "scenic", "msgpack": "scenic", "hf": "huggingface"}

_ORBAX_MARKERS = ("_METADATA", "manifest.ocdbt", "_CHECKPOINT_METADATA", "_sharding")
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_SCENIC_FILE = re.compile(r"^checkpoint(_\d+)?$")


def load_params(path: str | os.PathLike, format: str | None = None) -> Tree:  # noqa: A002
    """Reads the model parameters of a checkpoint into a nested dict of numpy arrays.

    Args:
      path: a file or a directory (see the module docstring). Directories are searched for the
        latest checkpoint: `checkpoint_<step>` files, orbax `<step>/` folders, a `checkpoints/`
        sub-folder, or a HuggingFace model directory.
      format: one of `FORMATS` (or `None`/'auto' to detect it). Scenic's
        `init_from.checkpoint_format` values 'scenic' and 'big_vision' are accepted; 'big_vision'
        also reads a plain ViT `.npz`, as Scenic's configs suggest.

    Returns:
      The parameters, in Scenic's Linen layout.

    Raises:
      FileNotFoundError: `path` does not exist or holds no checkpoint.
      CheckpointError: the format is unknown, or the file is truncated or corrupt.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path!r}: the path does not exist.")
    fmt = _canonical_format(format)
    if fmt is None:
        fmt, path = detect_format(path)
    else:
        if fmt in ("vit", "big_vision", "scenic") and os.path.isdir(path):
            _, path = detect_format(path)
        _check_explicit_format(path, fmt)
    logging.info("Reading %s checkpoint %s", fmt, path)
    if fmt in ("vit", "big_vision"):
        return read_npz(path)
    if fmt == "scenic":
        return read_scenic(path)
    if fmt == "orbax":
        return read_orbax(path)
    from vivit_jax.checkpoints import huggingface  # Local import: keeps this module light.

    return huggingface.load_huggingface_vivit(path)[2]


def _canonical_format(format: str | None) -> str | None:  # noqa: A002
    if format in (None, "", "auto"):
        return None
    fmt = _FORMAT_ALIASES.get(format, format)
    if fmt not in FORMATS:
        raise CheckpointError(
            f"Unknown checkpoint format {format!r}; expected one of {FORMATS} or 'auto'."
        )
    return fmt


def _check_explicit_format(path: str, fmt: str):
    """An explicit format that contradicts the file's contents is an error naming both."""
    try:
        found, _ = detect_format(path)
    except (CheckpointError, FileNotFoundError):
        return  # Undetectable: trust the caller.
    family = {"vit": "npz", "big_vision": "npz"}
    if family.get(found, found) != family.get(fmt, fmt):
        raise CheckpointError(
            f"format={fmt!r} was requested, but {path!r} looks like a {found!r} checkpoint; "
            "pass format='auto' or the right format."
        )


def detect_format(path: str) -> tuple[str, str]:
    """Returns (format, the file or directory to read) for a path users point us at."""
    if os.path.isfile(path):
        return _detect_file_format(path), path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No checkpoint at {path!r}: the path does not exist.")
    entries = set(os.listdir(path))
    if "config.json" in entries and entries & set(_HF_WEIGHTS):
        return "huggingface", path
    if entries & set(_ORBAX_MARKERS) or "state" in entries:
        return "orbax", path
    steps = _orbax_steps(path)
    if steps:
        return "orbax", path
    scenic = _latest_scenic_entry(path, entries)
    if scenic is not None:
        return detect_format(scenic)
    if "checkpoints" in entries:
        return detect_format(os.path.join(path, "checkpoints"))
    shown = ", ".join(sorted(entries)[:10]) or "nothing"
    raise FileNotFoundError(
        f"No checkpoint found in directory {path!r} (it holds: {shown}). Expected a "
        "`checkpoint_<step>` file, orbax `<step>/` folders, or config.json + model weights."
    )


def _detect_file_format(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"Checkpoint file {path!r} is empty.")
    if head[:4] == b"PK\x03\x04" or path.endswith(".npz"):
        return "vit"  # One reader handles both .npz layouts.
    name = os.path.basename(path)
    if name.endswith((".safetensors", ".bin", ".json")):
        return "huggingface"
    # A msgpack map starts with 0x80-0x8f (fixmap), 0xde (map16) or 0xdf (map32).
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF) or _SCENIC_FILE.match(name):
        return "scenic"
    raise CheckpointError(
        f"Unknown checkpoint format for {path!r}: not a .npz archive, not a Flax msgpack file, "
        f"not a HuggingFace directory (first bytes {head!r}). Pass format= explicitly."
    )


def _latest_scenic_entry(directory: str, entries: set[str]) -> str | None:
    best: tuple[int, str] | None = None
    for name in entries:
        match = _SCENIC_FILE.match(name)
        if match:
            step = int(match.group(1)[1:]) if match.group(1) else -1
            if best is None or step > best[0]:
                best = (step, name)
    return None if best is None else os.path.join(directory, best[1])


def _orbax_steps(directory: str) -> list[int]:
    steps = []
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.isdigit() and os.path.isdir(full):
            inner = set(os.listdir(full))
            if inner & set(_ORBAX_MARKERS) or "state" in inner:
                steps.append(int(name))
    return sorted(steps)


# --------------------------------------------------------------------------------------------
# .npz: vision_transformer and big_vision.


def read_npz(path: str) -> Tree:
    """Reads a ViT (vision_transformer) or big_vision `.npz` checkpoint."""
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {key: np.asarray(data[key]) for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read {path!r} as .npz: truncated or corrupt ({e}).") from e
    if not flat:
        raise CheckpointError(f"{path!r} is an empty .npz archive.")
    tree = trees.unflatten_slash_keys(flat)
    if "opt" in tree:  # big_vision training checkpoint.
        if "target" not in tree["opt"]:
            raise CheckpointError(f"{path!r}: found 'opt/' keys but no 'opt/target/' parameters.")
        tree = tree["opt"]["target"]
    elif "params" in tree and isinstance(tree["params"], dict):
        tree = tree["params"]
    if not isinstance(tree, dict) or not any(k in tree for k in ("embedding", "Transformer")):
        raise CheckpointError(
            f"{path!r} holds no ViT parameters: expected 'embedding/' and 'Transformer/' keys "
            f"(possibly under 'opt/target/' or 'params/'); top-level keys: {sorted(tree)[:10]}."
        )
    return normalise_vit_tree(tree)


def normalise_vit_tree(tree: Mapping[str, Any]) -> Tree:
    """Puts an image-ViT tree (any of the Google layouts) into Scenic's Linen layout."""
    tree = trees.convert_pre_linen(tree)
    if "head" in tree and "output_projection" not in tree:
        tree["output_projection"] = tree.pop("head")
    encoder = tree.get("Transformer", {})
    if "encoderblock" in encoder:  # big_vision with scan=True: blocks stacked on axis 0.
        stacked = trees.flatten(encoder.pop("encoderblock"))
        depth = {v.shape[0] for v in stacked.values()}
        if len(depth) != 1:
            raise CheckpointError(f"Scanned encoder blocks disagree on depth: {sorted(depth)}.")
        for i in range(depth.pop()):
            encoder[f"encoderblock_{i}"] = trees.unflatten({p: v[i] for p, v in stacked.items()})
    posemb = tree.pop("pos_embedding", None)
    if posemb is None and "pos_embedding" in encoder:
        posemb = encoder.pop("pos_embedding")
    if posemb is not None:
        # big_vision adds the position embedding before concatenating the CLS token; a zero row
        # for the CLS position gives the same sum in Scenic's concatenate-then-add layout.
        n = posemb.shape[1]
        if "cls" in tree and int(np.sqrt(n)) ** 2 == n:  # Some versions already hold a CLS row.
            posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
        encoder["posembed_input"] = {"pos_embedding": posemb}
    return tree


# --------------------------------------------------------------------------------------------
# Scenic / Flax msgpack.


def read_scenic(path: str) -> Tree:
    """Reads a Flax msgpack checkpoint file (Scenic's `checkpoint` / `checkpoint_<step>`)."""
    if os.path.isdir(path):  # Flax's orbax-backed `checkpoint_<step>/` directories.
        return read_orbax(path)
    from flax import serialization

    with open(path, "rb") as f:
        data = f.read()
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated exception types.
        raise CheckpointError(
            f"Cannot read {path!r} as a Flax msgpack checkpoint: truncated or corrupt ({e!r})."
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path!r} does not hold a dict of parameters.")
    return find_params(state, path)


def find_params(state: Mapping[str, Any], where: str) -> Tree:
    """Finds the model parameters inside a saved train state."""
    candidates = (("optimizer", "target"), ("params",), ("opt", "target"), ("state", "params"))
    for path in candidates:
        if trees.has_path(state, path) and isinstance(trees.get_path(state, path), Mapping):
            params = trees.get_path(state, path)
            break
    else:
        if "embedding" in state or "Transformer" in state or "SpatialTransformer" in state:
            params = state
        else:
            raise CheckpointError(
                f"No parameters in {where!r}: looked for 'optimizer/target', 'params' and "
                f"'opt/target'; top-level keys are {sorted(state)[:10]}."
            )
    params = trees.to_numpy_tree(params)
    if any(_is_pre_linen_block(block) for block in _blocks(params)):
        params = trees.convert_pre_linen(params)
    if "head" in params and "output_projection" not in params:
        params["output_projection"] = params.pop("head")
    return params


def _blocks(params: Mapping[str, Any]):
    for encoder in ("Transformer", "SpatialTransformer", "TemporalTransformer"):
        for name, block in params.get(encoder, {}).items():
            if name.startswith("encoderblock") and isinstance(block, Mapping):
                yield block


def _is_pre_linen_block(block: Mapping[str, Any]) -> bool:
    return "MlpBlock_3" in block or "MultiHeadDotProductAttention_1" in block


# --------------------------------------------------------------------------------------------
# orbax (this project's training checkpoints).

ORBAX_ITEM = "state"


def read_orbax(path: str) -> Tree:
    """Reads only the `params` of an orbax checkpoint, without its optimizer-state structure.

    `path` may be a CheckpointManager directory (`<workdir>/checkpoints`, latest step is read),
    a workdir holding `checkpoints/`, one step directory (`.../checkpoints/<step>`), or the item
    directory itself (`.../<step>/state`).
    """
    import orbax.checkpoint as ocp

    item_dir = _orbax_item_dir(path)
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
    return find_params(restored, item_dir)


def _orbax_item_dir(path: str) -> str:
    if not os.path.isdir(path):
        raise CheckpointError(f"An orbax checkpoint is a directory; {path!r} is a file.")
    entries = set(os.listdir(path))
    if "_METADATA" in entries or "manifest.ocdbt" in entries:
        return path
    if ORBAX_ITEM in entries:
        return os.path.join(path, ORBAX_ITEM)
    if "checkpoints" in entries and not _orbax_steps(path):
        return _orbax_item_dir(os.path.join(path, "checkpoints"))
    steps = _orbax_steps(path)
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


def save_params_orbax(directory: str | os.PathLike, params: Mapping[str, Any], step: int = 0):
    """Writes `params` the way the training code does: `<directory>/<step>/state/` via
    `orbax.checkpoint.CheckpointManager`, item `state` = {'params': ..., 'step': ...}.

    Used by tests and by `python -m vivit_jax.checkpoints.convert --to=orbax`.
    """
    import orbax.checkpoint as ocp

    state = {"params": trees.to_numpy_tree(params), "step": np.asarray(step, np.int64)}
    manager = ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), item_names=(ORBAX_ITEM,))
    try:
        manager.save(step, args=ocp.args.Composite(**{ORBAX_ITEM: ocp.args.StandardSave(state)}))
        manager.wait_until_finished()
    finally:
        manager.close()
