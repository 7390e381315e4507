"""Checkpoint readers: ViT `.npz`, big_vision `.npz`, Scenic/Flax msgpack, orbax -> plain trees.

`load_params(path)` detects the format and returns a nested `dict` of `numpy` arrays named and
shaped like Scenic's Flax Linen parameters (its `projects/vivit/model.py`), whatever the file
layout was:

| format        | what users have                                   | where the params are        |
|---------------|---------------------------------------------------|-----------------------------|
| `vit`         | google-research/vision_transformer `.npz`         | flat `/` keys, pre-Linen    |
| `big_vision`  | big_vision `.npz` (training or exported; also     | `opt/target/`, `params/`,   |
|               | SigLIP / LiT two-tower: the image tower is read)  | `params/img/`               |
| `scenic`      | Scenic / Flax msgpack `checkpoint[_<step>]`       | `optimizer/target`, `params`|
| `orbax`       | this project's `<workdir>/checkpoints/<step>/`    | item `state`, field `params`|
| `huggingface` | `save_pretrained` directory (see huggingface.py)  | `config.json` + weights     |

Paths may be relative or absolute, and may end in big_vision's sub-tree syntax `file.npz:img`
(a colon and a '/'-separated key under the parameters) to read one model of several.

The ViT head is renamed `head` -> `output_projection` (Scenic's name) so that every tree speaks
one vocabulary; big_vision's `pos_embedding` (added before the CLS token is concatenated) moves
to `Transformer/posembed_input/pos_embedding` with a zero row for the CLS token, which computes
the same function in Scenic's layout. big_vision's `MAPHead_0` (SigLIP's attention pooling)
is kept as it is: no ViViT has one, so fine-tuning reports it unused.
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
from vivit_jax.checkpoints.orbax_io import (
    ORBAX_MARKERS,
    orbax_steps,
    read_orbax_state,
    save_params_orbax,
)
from vivit_jax.checkpoints.trees import CheckpointError, Tree

FORMATS = ("vit", "big_vision", "scenic", "orbax", "huggingface")
# Scenic's `checkpoint_format` values and friendly aliases.
_FORMAT_ALIASES = {"npz": "vit", "flax": "scenic", "msgpack": "scenic", "hf": "huggingface"}

HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_SCENIC_FILE = re.compile(r"^checkpoint(_\d+)?$")
_MODEL_KEYS = ("embedding", "Transformer", "SpatialTransformer")
_SUBTREE_KEY = re.compile(r"\w+(/\w+)*")  # big_vision's `path:key` syntax.


def load_params(path: str | os.PathLike, format: str | None = None) -> Tree:  # noqa: A002
    """Reads the model parameters of a checkpoint into a nested dict of numpy arrays.

    Args:
      path: a file or a directory (see the module docstring), relative or absolute. Directories
        are searched for the latest checkpoint: `checkpoint_<step>` files, orbax `<step>/`
        folders, a `checkpoints/` sub-folder, or a HuggingFace model directory. big_vision's
        sub-tree syntax `file.npz:img` (a colon, then a '/'-separated key under the
        parameters) reads one model of a file that holds several, e.g. the image tower of a
        SigLIP / LiT checkpoint (which is also found without it).
      format: one of `FORMATS` (or `None`/'auto' to detect it). Scenic's
        `init_from.checkpoint_format` values 'scenic' and 'big_vision' are accepted; 'big_vision'
        also reads a plain ViT `.npz`, as Scenic's configs suggest.

    Returns:
      The parameters, in Scenic's Linen layout.

    Raises:
      FileNotFoundError: `path` does not exist or holds no checkpoint.
      CheckpointError: the format is unknown, the file is truncated or corrupt, or it holds no
        (complete) ViT / ViViT.
    """
    path, key = split_subtree(os.fspath(path))
    if not os.path.exists(path):
        sub = f" (with the sub-tree ':{key}')" if key else ""
        raise FileNotFoundError(f"No checkpoint at {path!r}{sub}: the path does not exist.")
    fmt = _canonical_format(format)
    if fmt is None:
        fmt, path = _detect(path)
    else:
        if fmt in ("vit", "big_vision", "scenic") and os.path.isdir(path):
            _, path = _detect(path)
        _check_explicit_format(path, fmt)
    logging.info("Reading %s checkpoint %s%s", fmt, path, f" (sub-tree {key})" if key else "")
    if fmt in ("vit", "big_vision"):
        return read_npz(path, key)
    if fmt == "scenic":
        return read_scenic(path, key)
    if fmt == "orbax":
        return read_orbax(path, key)
    if key:
        raise CheckpointError(
            f"{path!r} is a HuggingFace directory, which holds one model: drop ':{key}'."
        )
    from vivit_jax.checkpoints import huggingface  # Local import: keeps this module light.

    return huggingface.load_huggingface_vivit(path)[2]


def split_subtree(path: str) -> tuple[str, str | None]:
    """big_vision's `file.npz:img/sub` -> ('file.npz', 'img/sub'); else (path, None).

    A path that exists as written is never split, so a file whose name holds a colon still
    reads.
    """
    if os.path.exists(path):
        return path, None
    base, sep, key = path.rpartition(":")
    key = key.strip("/")
    if sep and base and _SUBTREE_KEY.fullmatch(key):
        return base, key
    return path, None


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
        found, _ = _detect(path)
    except (CheckpointError, FileNotFoundError):
        return  # Undetectable: trust the caller.
    family = {"vit": "npz", "big_vision": "npz"}
    if family.get(found, found) != family.get(fmt, fmt):
        raise CheckpointError(
            f"format={fmt!r} was requested, but {path!r} looks like a {found!r} checkpoint; "
            "pass format='auto' or the right format."
        )


def detect_format(path: str) -> tuple[str, str]:
    """Returns (format, the file or directory to read) for a path users point us at.

    A `path:key` sub-tree suffix (see `load_params`) is kept on the returned path.
    """
    base, key = split_subtree(os.fspath(path))
    fmt, resolved = _detect(base)
    return fmt, resolved if key is None else f"{resolved}:{key}"


def _detect(path: str) -> tuple[str, str]:
    if os.path.isfile(path):
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.basename(path) in (*HF_WEIGHTS, "config.json") and _is_huggingface(parent):
            return "huggingface", os.path.dirname(path) or "."  # A file of a HF directory.
        return _detect_file_format(path), path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No checkpoint at {path!r}: the path does not exist.")
    entries = set(os.listdir(path))
    if _is_huggingface(path):
        return "huggingface", path
    if entries & set(ORBAX_MARKERS) or "state" in entries:
        return "orbax", path
    steps = orbax_steps(path)
    if steps:
        return "orbax", path
    scenic = _latest_scenic_entry(path, entries)
    if scenic is not None:
        return _detect(scenic)
    if "checkpoints" in entries:
        return _detect(os.path.join(path, "checkpoints"))
    shown = ", ".join(sorted(entries)[:10]) or "nothing"
    raise FileNotFoundError(
        f"No checkpoint found in directory {path!r} (it holds: {shown}). Expected a "
        "`checkpoint_<step>` file, orbax `<step>/` folders, or config.json + model weights."
    )


def _is_huggingface(directory: str) -> bool:
    entries = set(os.listdir(directory))
    return "config.json" in entries and bool(entries & set(HF_WEIGHTS))


def _detect_file_format(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"Checkpoint file {path!r} is empty.")
    if head[:4] == b"PK\x03\x04" or path.endswith(".npz"):
        return "vit"  # One reader handles both .npz layouts.
    # A msgpack map starts with 0x80-0x8f (fixmap), 0xde (map16) or 0xdf (map32).
    if (
        0x80 <= head[0] <= 0x8F
        or head[0] in (0xDE, 0xDF)
        or _SCENIC_FILE.match(os.path.basename(path))
    ):
        return "scenic"
    raise CheckpointError(
        f"Unknown checkpoint format: {path!r} ({os.path.getsize(path):,} bytes, first bytes "
        f"{head!r}) is not a checkpoint of any known format. Known: vit / big_vision (a .npz "
        "zip archive, first bytes b'PK\\x03\\x04'), scenic (a Flax msgpack file, which starts "
        "with a map: 0x80-0x8f, 0xde or 0xdf), orbax (a directory of `<step>/state/`) and "
        "huggingface (a directory with config.json and model.safetensors)."
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


# --------------------------------------------------------------------------------------------
# .npz: vision_transformer and big_vision.


def read_npz(path: str, key: str | None = None) -> Tree:
    """Reads a ViT (vision_transformer) or big_vision `.npz` checkpoint.

    `key` ('img', 'img/sub') selects a sub-tree of the parameters, as big_vision's `path:key`;
    without it, a file whose parameters hold exactly one ViT beside other models (the image
    tower `img` of a SigLIP / LiT two-tower checkpoint, beside `txt` and `t`) reads that ViT.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {name: np.asarray(data[name]) for name in data.files}
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
    found = select_model(tree, key, path)
    if found is None:
        raise CheckpointError(
            f"{path!r} holds no ViT parameters: expected 'embedding/' and 'Transformer/' keys "
            f"(possibly under 'opt/target/' or 'params/', or under one model's key there, as "
            f"'params/img/'); top-level keys: {sorted(tree)[:10]}."
        )
    params = normalise_vit_tree(found)
    trees.check_vit_layout(params, repr(path), have=sorted(flat))
    return params


def select_model(tree: Mapping[str, Any], key: str | None, where: str) -> Tree | None:
    """The model in a parameter tree: the sub-tree `key`, the tree itself, or its only ViT.

    Returns None where there is no model; raises where `key` is missing or several ViTs are.
    """
    if key:
        node: Any = tree
        for i, part in enumerate(key.split("/")):
            if not isinstance(node, Mapping) or part not in node:
                at = "/".join(key.split("/")[:i]) or "the top level"
                keys = sorted(node)[:20] if isinstance(node, Mapping) else "an array"
                raise CheckpointError(
                    f"{where!r} has no sub-tree {key!r}: at {at} its parameters hold {keys}."
                )
            node = node[part]
        tree = node
    if not isinstance(tree, Mapping):
        return None
    if any(k in tree for k in _MODEL_KEYS):
        return dict(tree)
    towers = sorted(
        k
        for k, v in tree.items()
        if isinstance(v, Mapping) and "embedding" in v and any(enc in v for enc in _MODEL_KEYS[1:])
    )
    if len(towers) > 1:
        raise CheckpointError(
            f"{where!r} holds several models ({towers}); pick one with big_vision's sub-tree "
            f"syntax, e.g. '{where}:{towers[0]}'."
        )
    if not towers:
        return None
    others = sorted(k for k in tree if k != towers[0])
    logging.info("%s: reading model %r; not read: %s.", where, towers[0], others)
    return dict(tree[towers[0]])


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


def read_scenic(path: str, key: str | None = None) -> Tree:
    """Reads a Flax msgpack checkpoint file (Scenic's `checkpoint` / `checkpoint_<step>`)."""
    if os.path.isdir(path):  # Flax's orbax-backed `checkpoint_<step>/` directories.
        return read_orbax(path, key)
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
    return find_params(state, path, key)


def read_orbax(path: str, key: str | None = None) -> Tree:
    """The `params` of an orbax checkpoint (see `orbax_io.read_orbax_state`); `key`: see
    `read_npz`."""
    restored, item_dir = read_orbax_state(path)
    return find_params(restored, item_dir, key)


def find_params(state: Mapping[str, Any], where: str, key: str | None = None) -> Tree:
    """Finds the model parameters inside a saved train state (`key`: see `read_npz`)."""
    candidates = (("optimizer", "target"), ("params",), ("opt", "target"), ("state", "params"))
    for path in candidates:
        if trees.has_path(state, path) and isinstance(trees.get_path(state, path), Mapping):
            params = select_model(trees.get_path(state, path), key, where)
            break
    else:
        params = select_model(state, key, where)
    if params is None:
        raise CheckpointError(
            f"No parameters in {where!r}: looked for 'optimizer/target', 'params' and "
            f"'opt/target'{f' and their sub-tree {key!r}' if key else ''}; top-level keys are "
            f"{sorted(state)[:10]}."
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


__all__ = [
    "FORMATS",
    "detect_format",
    "find_params",
    "load_params",
    "normalise_vit_tree",
    "read_npz",
    "read_orbax",
    "read_scenic",
    "save_params_orbax",
    "select_model",
    "split_subtree",
]
