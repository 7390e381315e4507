"""Image -> video and video -> video parameter surgery: pure functions on plain trees.

`inflate_params(target, restored, model_config, init_from)` returns a new tree shaped exactly
like `target` (the model's fresh initialisation) with as much as possible taken from `restored`
(a checkpoint in Scenic's layout, see `formats.load_params`), plus a list of `Change` rows that
say what happened to every parameter. Nothing is modified in place; an error leaves the inputs
as they were.

What goes where (after Scenic's `projects/vivit/model_utils.py`), for checkpoints of an image
ViT ("image") or of a ViViT:

| model            | from an image ViT                                         | from a ViViT    |
|------------------|-----------------------------------------------------------|-----------------|
| all              | `embedding`: 2D kernel -> tubelet (central frame/average) | same variant    |
| 1, 4 spacetime   | `Transformer` 1:1, pos-emb tiled over time                | only (1 <-> 4 ok)|
| 2 fact. encoder  | `Transformer` -> `SpatialTransformer`, `cls` ->           |                 |
|                  | `cls_SpatialTransformer`; temporal encoder stays as init  |                 |
| 3 fact. self-att | `LayerNorm_0`->`LayerNorm_space`, attention ->            |                 |
|                  | `..._space`, `LayerNorm_1`->`LayerNorm_mlp`,              |                 |
|                  | `MlpBlock_0`->`MlpBlock`; temporal attention: zero output |                 |
|                  | projection (identity at start, trainable) or copy_spatial |                 |

The head (`output_projection`) is reset to zeros unless `restore_output_projection`;
`pre_logits` is kept when both sides have it with the same shape. Sizes are compared first
(`sizes.check_sizes`), so a checkpoint of another width or depth is named as such.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from vivit_jax.checkpoints import posemb, sizes, trees
from vivit_jax.checkpoints.posemb import Grid
from vivit_jax.checkpoints.trees import CheckpointError, Path

SPACETIME = "spacetime"
FACT_ENCODER = "factorized_encoder"
FACT_SELF_ATTENTION = "factorized_self_attention_block"
FACT_DOT_PRODUCT = "factorized_dot_product_attention"
IMAGE = "image"
VARIANTS = (SPACETIME, FACT_ENCODER, FACT_SELF_ATTENTION, FACT_DOT_PRODUCT)
KERNEL_INITS = ("central_frame_initializer", "average_frame_initializer")
TEMPORAL_ATTENTION_INITS = ("zero_output", "copy_spatial")

# Image-block module -> Model 3 block module.
_M3_RENAMES = {
    "LayerNorm_0": "LayerNorm_space",
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_space",
    "LayerNorm_1": "LayerNorm_mlp",
    "MlpBlock_0": "MlpBlock",
}
_POSEMB = ("posembed_input", "pos_embedding")
# Why a checkpoint's top-level module goes unused, where there is more to say than "no
# counterpart": big_vision's MAP head (SigLIP) pools tokens by attention, which no ViViT does.
_UNUSED = {"output_projection": "new head", "MAPHead_0": "big_vision MAP-pooling head"}


@dataclasses.dataclass(frozen=True)
class Change:
    """What happened to one model parameter (or one unused checkpoint parameter)."""

    path: str
    action: str
    checkpoint_shape: tuple[int, ...] | None
    model_shape: tuple[int, ...] | None


def describe_checkpoint(restored: Mapping[str, Any], token_grid=None) -> str:
    """Which variant a checkpoint tree is: 'image' or one of `VARIANTS` (1 and 4 are alike)."""
    trees.check_vit_layout(restored, "The checkpoint")
    if "SpatialTransformer" in restored:
        return FACT_ENCODER
    block0 = restored["Transformer"].get("encoderblock_0", {})
    if "MultiHeadDotProductAttention_space" in block0:
        return FACT_SELF_ATTENTION
    if np.ndim(restored["embedding"]["kernel"]) == 5:
        return SPACETIME
    if token_grid is not None:
        return SPACETIME if len(token_grid) == 3 else IMAGE
    n = np.shape(restored["Transformer"]["posembed_input"]["pos_embedding"])[1]
    n -= int("cls" in restored)
    # A 2D patch kernel with a non-square token count is a frame-sampling ViViT.
    return IMAGE if int(np.sqrt(n)) ** 2 == n else SPACETIME


class _Surgery:
    """Fills a copy of the model's flat parameters, recording one Change per parameter."""

    def __init__(self, target, restored, model_config, init_from, input_shape):
        self.target = trees.flatten(target)
        self.src = trees.flatten(restored)
        self.restored = restored
        self.out: dict[Path, Any] = dict(self.target)
        self.done: dict[Path, Change] = {}
        self.used: set[Path] = set()
        self.cfg = model_config
        self.init_from = init_from
        self.input_shape = input_shape
        self.variant = model_config.attention_config.type
        if self.variant not in VARIANTS:
            raise CheckpointError(f"Unknown attention_config.type {self.variant!r}.")
        grid = init_from.get("checkpoint_token_grid")
        self.src_grid_override = tuple(grid) if grid else None
        self.kind = describe_checkpoint(restored, self.src_grid_override)

    # -- primitives ---------------------------------------------------------------------------

    def put(self, tpath: Path, value, action: str, spath: Path | None = None):
        name = trees.path_str(tpath)
        if tpath not in self.target:
            shape = np.shape(value)
            raise CheckpointError(
                f"The model has no parameter {name} (checkpoint shape {shape}); is the "
                "checkpoint of a different variant or size?"
            )
        want = tuple(np.shape(self.target[tpath]))
        value = np.asarray(value)
        if value.shape != want:
            raise CheckpointError(
                f"Shape mismatch for {name}: checkpoint {value.shape}"
                f"{'' if spath in (None, tpath) else ' (' + trees.path_str(spath) + ')'}, model {want}."
            )
        self.out[tpath] = value.astype(np.asarray(self.target[tpath]).dtype, copy=False)
        src_shape = None if spath is None else tuple(np.shape(self.src[spath]))
        self.done[tpath] = Change(name, action, src_shape, want)
        if spath is not None:
            self.used.add(spath)

    def copy_tree(self, sprefix: Path, tprefix: Path, action: str = "copied"):
        """Copies every leaf under `sprefix` to the same relative path under `tprefix`."""
        src_leaves = {p[len(sprefix) :] for p in self.src if p[: len(sprefix)] == sprefix}
        tgt_leaves = {p[len(tprefix) :] for p in self.target if p[: len(tprefix)] == tprefix}
        if not src_leaves:
            raise CheckpointError(f"The checkpoint has no {trees.path_str(sprefix)}.")
        if src_leaves != tgt_leaves:
            raise CheckpointError(
                f"{trees.path_str(sprefix)} (checkpoint) and {trees.path_str(tprefix)} (model) "
                f"differ: only in checkpoint {sorted(map(trees.path_str, src_leaves - tgt_leaves))}"
                f", only in model {sorted(map(trees.path_str, tgt_leaves - src_leaves))}."
            )
        for rel in sorted(src_leaves):
            self.put((*tprefix, *rel), self.src[(*sprefix, *rel)], action, (*sprefix, *rel))

    def set_constant(self, tpath: Path, fill: float, action: str):
        value = np.full(np.shape(self.target[tpath]), fill, np.asarray(self.target[tpath]).dtype)
        self.put(tpath, value, action)

    def has_src(self, prefix: Path) -> bool:
        return any(p[: len(prefix)] == prefix for p in self.src)

    def has_target(self, prefix: Path) -> bool:
        return any(p[: len(prefix)] == prefix for p in self.target)

    # -- the plan -----------------------------------------------------------------------------

    def run(self):
        self.check_variants()
        self.check_classifier()
        encoders = self.encoders()
        restore = self.init_from.restore_input_embedding
        sizes.check_sizes(
            self.src, self.target, self.cfg, encoders, restore_input_embedding=restore
        )
        self.embedding()
        self.tokens()
        for skey, tkey, _ in encoders:
            spatial_only = tkey == "SpatialTransformer"
            self.encoder(skey, tkey, spatial_only, temporal_1d=tkey == "TemporalTransformer")
        self.heads()
        return self.finish()

    def encoders(self) -> list[tuple[str, str, str]]:
        """(checkpoint encoder, model encoder, config prefix of its sizes), in copy order."""
        if self.variant != FACT_ENCODER:
            return [("Transformer", "Transformer", "config.model")]
        src = "Transformer" if self.kind == IMAGE else "SpatialTransformer"
        pairs = [(src, "SpatialTransformer", "config.model.spatial_transformer")]
        t = "TemporalTransformer"
        if self.kind == FACT_ENCODER and self.has_target((t,)) and self.has_src((t,)):
            pairs.append((t, t, "config.model.temporal_transformer"))
        return pairs

    def check_variants(self):
        ok = self.kind == IMAGE or self.kind == self.variant
        ok |= {self.kind, self.variant} <= {SPACETIME, FACT_DOT_PRODUCT}
        if not ok:
            raise CheckpointError(
                f"The checkpoint is a {self.kind} ViViT but the model is "
                f"{self.variant}; only image ViT checkpoints can initialise another variant."
            )

    def check_classifier(self):
        declared = (self.init_from.get("model_config") or {}).get("model", {}).get("classifier")
        if declared is None:
            return
        has_cls = "cls" in self.restored or "cls_SpatialTransformer" in self.restored
        if (declared == "token") != has_cls:
            raise CheckpointError(
                f"init_from.model_config.model.classifier={declared!r}, but the checkpoint "
                f"{'has' if has_cls else 'has no'} CLS token parameter."
            )

    def embedding(self):
        if not self.init_from.restore_input_embedding:
            return
        src = np.asarray(self.src[("embedding", "kernel")])
        want = tuple(np.shape(self.target[("embedding", "kernel")]))
        spath = ("embedding", "kernel")
        if src.shape == want:
            self.put(spath, src, "copied", spath)
            self.embedding_bias()
            return
        if src.ndim != 4 or len(want) != 5 or want[1:] != src.shape:
            raise CheckpointError(
                f"Shape mismatch for embedding/kernel: checkpoint {src.shape}, model {want}; only "
                "a 2D patch kernel (h, w, 3, D) can become a tubelet kernel (t, h, w, 3, D)."
            )
        method = self.cfg.temporal_encoding_config.get("kernel_init_method")
        t = want[0]
        if method == "average_frame_initializer":
            kernel = np.repeat(src[None], t, axis=0) / t
            action = f"inflated: average over {t} frames"
        elif method == "central_frame_initializer":
            kernel = np.zeros(want, src.dtype)
            kernel[t // 2] = src
            action = f"inflated: central frame {t // 2} of {t}"
        else:
            raise CheckpointError(
                f"temporal_encoding_config.kernel_init_method={method!r}; to inflate a 2D "
                f"patch kernel use one of {KERNEL_INITS}."
            )
        self.put(spath, kernel, action, spath)
        self.embedding_bias()

    def embedding_bias(self):
        path = ("embedding", "bias")
        self.put(path, self.src[path], "copied", path)

    def tokens(self):
        """CLS tokens of the model from the checkpoint's, where both exist."""
        pairs = {"cls": ("cls",)}
        if self.variant == FACT_ENCODER:
            src_spatial = ("cls",) if self.kind == IMAGE else ("cls_SpatialTransformer",)
            pairs = {
                "cls_SpatialTransformer": src_spatial,
                "cls_TemporalTransformer": ("cls_TemporalTransformer",),
            }
        for name, spath in pairs.items():
            if (name,) in self.target and spath in self.src:
                self.put((name,), self.src[spath], "copied", spath)

    def encoder(self, skey, tkey, spatial_only=False, temporal_1d=False):
        for i in range(len(_block_names(self.src, skey))):  # Depths agree: check_sizes.
            sblock, tblock = (skey, f"encoderblock_{i}"), (tkey, f"encoderblock_{i}")
            if self.variant == FACT_SELF_ATTENTION and self.kind == IMAGE:
                self.factorised_block(sblock, tblock)
            else:
                self.copy_tree(sblock, tblock)
        self.copy_tree((skey, "encoder_norm"), (tkey, "encoder_norm"))
        if self.init_from.restore_positional_embedding:
            self.position_embedding(skey, tkey, spatial_only, temporal_1d)

    def factorised_block(self, sblock: Path, tblock: Path):
        for src_name, tgt_name in _M3_RENAMES.items():
            self.copy_tree((*sblock, src_name), (*tblock, tgt_name))
        att_time = (*tblock, "MultiHeadDotProductAttention_time")
        if self.init_from.temporal_attention_init == "copy_spatial":
            self.copy_tree(
                (*sblock, "MultiHeadDotProductAttention_0"),
                att_time,
                "copied from spatial attention",
            )
        elif self.init_from.temporal_attention_init == "zero_output":
            for leaf in ("kernel", "bias"):
                self.set_constant(
                    (*att_time, "out", leaf), 0.0, "zeroed: temporal attention starts as identity"
                )
        else:
            raise CheckpointError(
                f"init_from.temporal_attention_init={self.init_from.temporal_attention_init!r}; "
                f"expected one of {TEMPORAL_ATTENTION_INITS}."
            )

    def position_embedding(self, skey, tkey, spatial_only, temporal_1d):
        spath, tpath = (skey, *_POSEMB), (tkey, *_POSEMB)
        src, init = np.asarray(self.src[spath]), np.asarray(self.target[tpath])
        name = trees.path_str(tpath)
        if temporal_1d:
            src_cls = ("cls_TemporalTransformer",) in self.src
            tgt_cls = ("cls_TemporalTransformer",) in self.target
            src_grid = Grid(src.shape[1] - src_cls, 1, 1)
            tgt_grid = Grid(init.shape[1] - tgt_cls, 1, 1)
            size_change = "resize_tile"  # Scenic always interpolates the temporal encoder's.
        else:
            src_cls = (
                "cls_SpatialTransformer" if skey == "SpatialTransformer" else "cls",
            ) in self.src
            tgt_cls = (
                "cls_SpatialTransformer" if tkey == "SpatialTransformer" else "cls",
            ) in self.target
            if src.shape == init.shape and src_cls == tgt_cls:
                self.put(tpath, src, "copied", spath)
                return
            src_grid, tgt_grid = self.grids(
                src.shape[1] - src_cls, init.shape[1] - tgt_cls, spatial_only, name
            )
            size_change = self.init_from.positional_embed_size_change
        value, note = posemb.adapt(
            src,
            init,
            src_cls=src_cls,
            target_cls=tgt_cls,
            src_grid=src_grid,
            target_grid=tgt_grid,
            size_change=size_change,
            name=name,
        )
        self.put(tpath, value, f"{note} ({src_grid} -> {tgt_grid} tokens)", spath)

    def grids(self, n_src: int, n_tgt: int, spatial_only: bool, name: str) -> tuple[Grid, Grid]:
        """Token grids of checkpoint and model for a positional embedding."""
        over = self.src_grid_override
        if over is not None:
            src = Grid(None, *over) if len(over) == 2 else Grid(*over)
            if src.size != n_src:
                raise CheckpointError(
                    f"init_from.checkpoint_token_grid={over} has {src.size} tokens; the "
                    f"checkpoint's {name} has {n_src}."
                )
        elif self.kind == IMAGE or spatial_only:
            src = posemb.square_grid(n_src, f"checkpoint {name}")
        else:
            src = None
        target = self.target_grid(n_tgt, spatial_only, src, name)
        if src is None:
            src = _guess_video_grid(n_src, target, name)
        return src, target

    def target_grid(self, n: int, spatial_only: bool, src: Grid | None, name: str) -> Grid:
        size = tuple(int(x) for x in self.cfg.patches.size)
        ph, pw = size[:2]
        pt = size[2] if len(size) > 2 else 1  # frame sampling takes (h, w) patches
        tec = self.cfg.temporal_encoding_config
        sampled = tec.method == "temporal_sampling"
        if self.input_shape is not None:
            t, h, w = tuple(self.input_shape)[:3]
            nt = None if spatial_only else (tec.n_sampled_frames if sampled else t // pt)
            grid = Grid(nt, h // ph, w // pw)
            if grid.size != n:
                raise CheckpointError(
                    f"{name}: input_shape={tuple(self.input_shape)} gives a {grid} token grid "
                    f"({grid.size} tokens), the model has {n}."
                )
            return grid
        if spatial_only:
            return posemb.square_grid(n, f"model {name}")
        if sampled:
            return Grid(
                tec.n_sampled_frames, *posemb.square_grid(n // tec.n_sampled_frames, name)[1:]
            )
        tile_only = self.init_from.positional_embed_size_change == "tile"
        if tile_only and src is not None and n % (src.nh * src.nw) == 0:
            # 'tile' keeps the checkpoint's frame size, so only the frame count is unknown.
            return Grid(n // (src.nh * src.nw), src.nh, src.nw)
        # Otherwise n = nt * nh * nw has several readings (e.g. 144 = 4x6x6 = 9x4x4).
        raise CheckpointError(
            f"{name}: cannot tell the model's token grid (frames x height x width) from {n} "
            "tokens; pass input_shape=(frames, height, width) to init_from_pretrained (or set "
            "config.dataset_configs.num_frames and crop_size)."
        )

    def heads(self):
        out = ("output_projection",)
        restore = self.init_from.get("restore_output_projection", False)
        for leaf in ("kernel", "bias"):
            tpath = (*out, leaf)
            if tpath not in self.target:
                continue
            if restore:
                if (*out, leaf) not in self.src:
                    raise CheckpointError(
                        "restore_output_projection=True but the checkpoint has "
                        "no output_projection."
                    )
                self.put(tpath, self.src[tpath], "copied", tpath)
            else:
                self.set_constant(tpath, 0.0, "re-initialised to zeros (new head)")
        for leaf in ("kernel", "bias"):
            path = ("pre_logits", leaf)
            if path in self.target and path in self.src:
                if np.shape(self.target[path]) == np.shape(self.src[path]):
                    self.put(path, self.src[path], "copied", path)

    def finish(self):
        changes = list(self.done.values())
        for path in self.target:
            if path not in self.done:
                changes.append(
                    Change(
                        trees.path_str(path),
                        "kept initialisation",
                        None,
                        tuple(np.shape(self.target[path])),
                    )
                )
        for path in self.src:
            if path not in self.used:
                why = _UNUSED.get(path[0], "no counterpart")
                changes.append(
                    Change(
                        trees.path_str(path),
                        f"not used ({why})",
                        tuple(np.shape(self.src[path])),
                        None,
                    )
                )
        return trees.unflatten(self.out), changes


def _block_names(flat: Mapping[Path, Any], encoder: str) -> list[str]:
    names = {p[1] for p in flat if p[0] == encoder and p[1].startswith("encoderblock_")}
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


def _guess_video_grid(n: int, target: Grid, name: str) -> Grid:
    """A video checkpoint's grid: same frame size as the model, or same frame count."""
    guesses = set()
    if n % (target.nh * target.nw) == 0:
        guesses.add(Grid(n // (target.nh * target.nw), target.nh, target.nw))
    if target.nt and n % target.nt == 0:
        g = int(np.sqrt(n // target.nt))
        if g * g == n // target.nt:
            guesses.add(Grid(target.nt, g, g))
    if len(guesses) != 1:
        raise CheckpointError(
            f"{name}: cannot tell the checkpoint's token grid from {n} tokens (model grid "
            f"{target}); set init_from.checkpoint_token_grid=(frames, height, width)."
        )
    return guesses.pop()


def inflate_params(
    target: Mapping[str, Any],
    restored: Mapping[str, Any],
    model_config,
    init_from,
    *,
    input_shape: tuple[int, int, int] | None = None,
) -> tuple[dict[str, Any], list[Change]]:
    """Initialises a ViViT's parameters from an image ViT or a ViViT checkpoint.

    Args:
      target: the model's freshly initialised parameters (nested mapping).
      restored: checkpoint parameters in Scenic's layout (`load_params`).
      model_config: `config.model`.
      init_from: a resolved `config.init_from` (see `default_init_from_config`).
      input_shape: (frames, height, width) of the model's input; needed only where token grids
        cannot be told from the shapes.

    Returns:
      (parameters shaped like `target`, one `Change` per parameter).

    Raises:
      CheckpointError: naming the parameter and both shapes, for anything that does not fit.
    """
    return _Surgery(target, restored, model_config, init_from, input_shape).run()


def format_changes(changes: list[Change]) -> str:
    """A table of changes; encoder blocks that had the same treatment share one row."""
    rows: dict[tuple, int] = {}
    for c in changes:
        key = (
            re.sub(r"encoderblock_\d+", "encoderblock_*", c.path),
            c.action,
            c.checkpoint_shape,
            c.model_shape,
        )
        rows[key] = rows.get(key, 0) + 1
    table = [("parameter", "action", "checkpoint", "model")]
    for (path, action, cs, ms), count in rows.items():
        label = f"{path} (x{count})" if count > 1 else path
        table.append(
            (label, action, "-" if cs is None else str(cs), "-" if ms is None else str(ms))
        )
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log_changes(changes: list[Change], header: str):
    logging.info("%s\n%s", header, format_changes(changes))
