"""Which `config.model` size differs from a checkpoint's, checked before any parameter moves.

A checkpoint initialises only a model of its own width, depth, head count and MLP width, and
(for its patch embedding) its own patch size. `check_sizes` compares those sizes first, so a
mismatch is reported as the size it is, with the config key to change, rather than as the
first parameter conversion it happens to break (a wider checkpoint is not a kernel-inflation
problem).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vivit_jax.checkpoints import trees
from vivit_jax.checkpoints.trees import CheckpointError, Path

_EMBEDDING = ("embedding", "kernel")
# (config key, modules that hold it in an encoder block, the leaf, the axis that is the size).
_BLOCK_SIZES = (
    ("num_heads", ("MultiHeadDotProductAttention_0", "MultiHeadDotProductAttention_space"),
     ("query", "kernel"), 1),
    ("mlp_dim", ("MlpBlock_0", "MlpBlock"), ("Dense_0", "kernel"), 1),
)  # fmt: skip
_HOW = "`python -m vivit_jax.checkpoints.convert --input=<checkpoint>` prints all its sizes"


def check_sizes(
    src: Mapping[Path, Any],
    target: Mapping[Path, Any],
    model_config,
    encoders: Sequence[tuple[str, str, str]],
    *,
    restore_input_embedding: bool,
):
    """Raises a CheckpointError naming the first size in which checkpoint and model differ.

    Args:
      src, target: flat {path: array} of the checkpoint and of the model.
      model_config: `config.model` (only quoted in messages).
      encoders: (checkpoint encoder, model encoder, config prefix of its sizes) for each encoder
        that will be copied, e.g. ('Transformer', 'SpatialTransformer',
        'config.model.spatial_transformer').
      restore_input_embedding: whether the patch embedding will be copied (else its patch size
        may differ).
    """
    if _EMBEDDING in src and _EMBEDDING in target:
        s, t = np.shape(src[_EMBEDDING]), np.shape(target[_EMBEDDING])
        if s[-1] != t[-1]:
            raise CheckpointError(
                f"The checkpoint's hidden_size is {s[-1]} but config.model.hidden_size is "
                f"{t[-1]} ({_pair(_EMBEDDING, s, _EMBEDDING, t)}): a checkpoint initialises "
                f"only a model of its own width. Set config.model.hidden_size={s[-1]} and the "
                f"checkpoint's num_heads, mlp_dim and num_layers ({_HOW}), or use a checkpoint "
                f"of width {t[-1]}."
            )
        if restore_input_embedding:
            _check_patches(s, t, model_config)
    for skey, tkey, prefix in encoders:
        _check_encoder(src, target, skey, tkey, prefix)


def _check_patches(s: tuple[int, ...], t: tuple[int, ...], model_config):
    """Kernels are (h, w, 3, D) for image patches and (t, h, w, 3, D) for tubelets."""
    where = _pair(_EMBEDDING, s, _EMBEDDING, t)
    patches = tuple(model_config.patches.size)
    keep = "or set config.init_from.restore_input_embedding=False to train the embedding anew"
    if len(s) >= 4 and len(t) >= 4 and s[-4:-2] != t[-4:-2]:
        raise CheckpointError(
            f"The checkpoint's patches are {s[-4]}x{s[-3]} but config.model.patches.size is "
            f"{patches} ({where}); a patch kernel is not resized: set config.model.patches.size "
            f"to ({s[-4]}, {s[-3]}{', ' + str(patches[2]) if len(patches) > 2 else ''}), {keep}."
        )
    if len(s) == 5 and len(t) == 5 and s[0] != t[0]:
        raise CheckpointError(
            f"The checkpoint's tubelets span {s[0]} frames but config.model.patches.size[2] is "
            f"{t[0]} ({where}); only a 2D image patch kernel is inflated over time: set "
            f"config.model.patches.size[2]={s[0]}, {keep}."
        )


def _check_encoder(src, target, skey: str, tkey: str, prefix: str):
    ns, nt = _depth(src, skey), _depth(target, tkey)
    if ns != nt:
        raise CheckpointError(
            f"The checkpoint's {skey} has {ns} encoder blocks, the model's {tkey} has {nt} "
            f"({prefix}.num_layers={nt}); set {prefix}.num_layers={ns} to fine-tune from this "
            "checkpoint, or use a checkpoint of the same depth."
        )
    for key, modules, leaf, axis in _BLOCK_SIZES:
        found_s = _find(src, (skey, "encoderblock_0"), modules, leaf)
        found_t = _find(target, (tkey, "encoderblock_0"), modules, leaf)
        if found_s is None or found_t is None:
            continue  # Nothing to compare: the copy reports what is missing.
        (spath, s), (tpath, t) = found_s, found_t
        if len(s) > axis and len(t) > axis and s[axis] != t[axis]:
            raise CheckpointError(
                f"The checkpoint's {skey} has {key} {s[axis]}, but {prefix}.{key} is {t[axis]} "
                f"({_pair(spath, s, tpath, t)}); set {prefix}.{key}={s[axis]} to fine-tune from "
                f"this checkpoint ({_HOW})."
            )


def _depth(flat: Mapping[Path, Any], encoder: str) -> int:
    return len({p[1] for p in flat if p[0] == encoder and p[1].startswith("encoderblock_")})


def _find(flat, block: Path, modules, leaf: Path) -> tuple[Path, tuple[int, ...]] | None:
    for module in modules:
        path = (*block, module, *leaf)
        if path in flat:
            return path, tuple(np.shape(flat[path]))
    return None


def _pair(spath: Path, s, tpath: Path, t) -> str:
    if spath == tpath:
        return f"{trees.path_str(spath)}: checkpoint {tuple(s)}, model {tuple(t)}"
    return (
        f"checkpoint {trees.path_str(spath)} {tuple(s)}, model {trees.path_str(tpath)} {tuple(t)}"
    )
