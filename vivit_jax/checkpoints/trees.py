"""Plain parameter trees: flatten, unflatten, copy, compare, and the errors this package raises.

Every reader in `vivit_jax.checkpoints` returns the same thing: a nested `dict` of `numpy`
arrays laid out and named exactly like Scenic's Flax Linen parameters (its
`projects/vivit/model.py`). The helpers here are the shared vocabulary of the readers and of
the inflation code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

Tree = dict[str, Any]
Path = tuple[str, ...]


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


def path_str(path: Iterable[str]) -> str:
    return "/".join(path)


def is_leaf(x: Any) -> bool:
    return not isinstance(x, Mapping)


def flatten(tree: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Nested mapping -> {path tuple: leaf}. Empty sub-mappings are dropped."""
    flat: dict[Path, Any] = {}
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[Path, Any]) -> Tree:
    """{path tuple: leaf} -> nested dict. Raises if a path is both a leaf and a node."""
    tree: Tree = {}
    for path, value in flat.items():
        node = tree
        for i, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise CheckpointError(
                    f"Parameter {path_str(path[: i + 1])} is both an array and a module."
                )
            node = child
        if path[-1] in node:
            raise CheckpointError(f"Parameter {path_str(path)} appears twice.")
        node[path[-1]] = value
    return tree


def unflatten_slash_keys(flat: Mapping[str, Any]) -> Tree:
    """{'a/b/c': leaf} -> nested dict (the layout of ViT and big_vision `.npz` files)."""
    return unflatten({tuple(k.split("/")): v for k, v in flat.items()})


def to_numpy_tree(tree: Mapping[str, Any]) -> Tree:
    """Deep copy of a mapping (dict, FrozenDict) with every leaf as a `numpy` array."""
    out: Tree = {}
    for key, value in tree.items():
        out[str(key)] = to_numpy_tree(value) if isinstance(value, Mapping) else np.asarray(value)
    return out


def get_path(tree: Mapping[str, Any], path: Path) -> Any:
    node: Any = tree
    for key in path:
        node = node[key]
    return node


def has_path(tree: Mapping[str, Any], path: Path) -> bool:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def shapes(tree: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """{'a/b': shape} for every leaf, handy for error messages and logs."""
    return {path_str(p): tuple(np.shape(v)) for p, v in flatten(tree).items()}


def check_vit_layout(tree: Mapping[str, Any], where: str, have: Iterable[str] | None = None):
    """Raises a CheckpointError naming what a ViT / ViViT tree (Scenic's layout) lacks.

    Args:
      tree: parameters as the readers return them.
      where: what to call the tree in the message (a file name, 'The checkpoint').
      have: the names to show as what it does hold (default: the tree's own '/' paths).
    """
    encoder = "SpatialTransformer" if "SpatialTransformer" in tree else "Transformer"
    needed = (
        ("embedding", "kernel"),
        ("embedding", "bias"),
        (encoder, "posembed_input", "pos_embedding"),
        (encoder, "encoderblock_0"),
        (encoder, "encoder_norm"),
    )
    missing = [path_str(p) for p in needed if not has_path(tree, p)]
    if not missing:
        return
    names = sorted(path_str(p) for p in flatten(tree)) if have is None else list(have)
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    raise CheckpointError(
        f"{where} is not a complete ViT / ViViT: it lacks {', '.join(missing)} (Scenic's names; "
        "big_vision's `pos_embedding` and `Transformer/encoderblock/` are read too); it holds "
        f"{shown or 'nothing'}."
    )


_NUMBERED = re.compile(r"^(.*)_(\d+)$")


def convert_pre_linen(tree: Mapping[str, Any]) -> Tree:
    """Renumbers pre-Linen submodule names to Linen's per-class numbering.

    Pre-Linen Flax numbered the submodules of a module in creation order across classes, so the
    original ViT block holds `LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2` and
    `MlpBlock_3`; Linen numbers each class separately (`LayerNorm_0`, `LayerNorm_1`,
    `MultiHeadDotProductAttention_0`, `MlpBlock_0`). Linen trees come back unchanged, because
    their numbers are already contiguous per class.
    """
    out: Tree = {}
    groups: dict[str, list[tuple[int, str]]] = {}
    for key in tree:
        match = _NUMBERED.match(key)
        if match:
            groups.setdefault(match.group(1), []).append((int(match.group(2)), key))
    renamed = {}
    for prefix, members in groups.items():
        for new_index, (_, old_key) in enumerate(sorted(members)):
            renamed[old_key] = f"{prefix}_{new_index}"
    for key, value in tree.items():
        new_key = renamed.get(key, key)
        out[new_key] = convert_pre_linen(value) if isinstance(value, Mapping) else value
    return out
