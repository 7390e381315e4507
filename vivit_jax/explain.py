r"""Where a prediction comes from: attention rollout maps of a clip, as a video and an image.

    python -m vivit_jax.predict --config=configs/demo.py --checkpoint=/tmp/vivit_demo \
        --explain=/tmp/attention clip.mp4

For each video, its central test view (the middle clip, centre crop) goes through the model with
the reference attention (`attention_implementation='einsum'`, every token through every block),
which sows each attention's softmax weights (`vivit_jax.models.attention.weights_sink`, sown
into the `MultiHeadDotProductAttention` that computed them). The weights are averaged over heads
and rolled out (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020): each
attention becomes `0.5 A + 0.5 I` (the residual connection), and the readout's row is carried
back through the network to the input tokens. The readout is the class token for the token
classifier, else the mean of the tokens (the pooling). The result is one weight per tubelet, a
map that sums to 1 over the tubelets (the class tokens' own share is dropped).

What each variant's map is:
  Model 1 (spacetime)   rollout through the joint space-time attention: the class token's (or
                        the pooled tokens') attention flow to every tubelet.
  Model 2 (factorised   the temporal encoder's rollout gives each frame-token a weight; each
    encoder)            frame's spatial-encoder rollout gives its tubelets a map that sums to 1;
                        a tubelet's weight is the product (the average-pool baseline weighs the
                        frames equally).
  Model 3 (factorised   rollout through each block's spatial and temporal attention in turn,
    self-attention)     each with its own residual, from the pooled (mean) readout.
  Model 4 (factorised   rollout through each block's attention, half of whose heads attend over
    dot-product)        time and half over space: `0.5 I + 0.25 A_time + 0.25 A_space`.

Written per input `<dir>/<video stem>.attention.mp4` (each frame of the view, and beside it the
frame under its tubelets' heat map — normalised to the frame's maximum — above a bar chart of the
frames' weights with the current frame highlighted) and `<dir>/<video stem>.attention.png` (up to
8 frames of the view over their maps and weight bars, headed by the top class).

A tubelet covers `t` frames × `h` × `w` pixels (`model.patches.size`); a frame's weight is its
tubelet row's weight / t (the weights of the frames sum to 1). With uniform frame sampling only
the sampled frames are seen by the model: the others show no map and weight 0.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.models import attention as attention_lib

COLLECTION = "intermediates"
WEIGHTS = "attention_weights"
MAX_STRIP_FRAMES = 8
MIN_DISPLAY_SIZE = 128
# Anchors of a dark-to-bright colour map (inferno-like): low attention dark, high bright.
_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32
)


def _sow_attention(next_fun, args, kwargs, context):
    """A flax method interceptor: inside each `MultiHeadDotProductAttention.__call__`, the
    einsum path's weights are sown into that module."""
    module = context.module
    if isinstance(module, nn.MultiHeadDotProductAttention) and context.method_name == "__call__":
        with attention_lib.weights_sink(lambda w: module.sow(COLLECTION, WEIGHTS, w)):
            return next_fun(*args, **kwargs)
    return next_fun(*args, **kwargs)


def explained_model(config, num_classes: int):
    """The model of `config` (experiment config) with the einsum attention and every token
    through every block: the attention weights a rollout needs, the same logits."""
    from vivit_jax.models import create_model

    model_config = config.model.copy_and_resolve_references()
    model_config.unlock()
    model_config.attention_implementation = "einsum"
    model_config.last_block_cls_only = False
    model_config.remat = False  # No backward pass here; and sown values stay plain.
    return create_model(model_config, num_classes, dtype=config.model_dtype_str)


def attention_weights(model, params, x: jax.Array):
    """`(logits, sown)`: the model on `x` and its `{module path: (weights, ...)}` tree.

    `model` must use the einsum attention (`explained_model`).
    """
    with nn.intercept_methods(_sow_attention):
        logits, state = model.apply({"params": params}, x, train=False, mutable=[COLLECTION])
    return logits, state.get(COLLECTION, {})


def _weights(tree, *path) -> list[jax.Array]:
    """The sown weights of the module at `path`, each `[..., heads, q, k]` averaged over heads
    to `[..., q, k]` float32 (video 0 of the batch)."""
    node = tree
    for key in path:
        node = node[key]
    return [w[0].astype(jnp.float32).mean(axis=-3) for w in node[WEIGHTS]]


def _flow(v: jax.Array, a: jax.Array, spec: str) -> jax.Array:
    """One attention's rollout step on readout weights `v`: `v (0.5 A + 0.5 I)`."""
    return 0.5 * jnp.einsum(spec, v, a) + 0.5 * v


def _start(n: int, token: bool, lead=()) -> jax.Array:
    """The readout over n tokens: the class token (index 0) or the mean of all."""
    if token:
        return jnp.zeros(lead + (n,)).at[..., 0].set(1.0)
    return jnp.full(lead + (n,), 1.0 / n)


def _without_cls(v: jax.Array, token: bool) -> jax.Array:
    v = v[..., 1:] if token else v
    return v / jnp.sum(v, axis=-1, keepdims=True)


def _encoder_rollout(sown, encoder: str, layers: int, token: bool, lead=()) -> jax.Array:
    """Rollout through a plain encoder's blocks; `[..., N]` over its input tokens."""
    blocks = [
        _weights(sown, encoder, f"encoderblock_{i}", "MultiHeadDotProductAttention_0")[0]
        for i in range(layers)
    ]
    v = _start(blocks[0].shape[-1], token, lead)
    for a in reversed(blocks):
        v = _flow(v, a, "...q,...qk->...k")
    return _without_cls(v, token)


def _factorised_rollout(model, sown, grid: tuple[int, int]) -> jax.Array:
    """Models 3 and 4 from the mean readout; `[nt, S]`."""
    nt, s = grid
    v = jnp.full((nt, s), 1.0 / (nt * s))
    space, time = "tq,tqk->tk", "qs,sqk->ks"  # a_space [nt, S, S]; a_time [S, nt, nt]
    for i in reversed(range(model.encoder.num_layers)):
        block = ("Transformer", f"encoderblock_{i}")
        if model.attention_type == "factorized_dot_product_attention":
            a_time, a_space = _weights(sown, *block, "MultiHeadDotProductAttention_0")
            mixed = 0.5 * jnp.einsum(time, v, a_time) + 0.5 * jnp.einsum(space, v, a_space)
            v = 0.5 * mixed + 0.5 * v
            continue
        for axis in reversed(model.attention_order.split("_")):
            (a,) = _weights(sown, *block, f"MultiHeadDotProductAttention_{axis}")
            v = _flow(v, a, space if axis == "space" else time)
    return v


def tubelet_map(model, sown, grid: tuple[int, int, int]) -> jax.Array:
    """`[nt, nh, nw]` rollout weights of the tubelets (they sum to 1) from the sown weights."""
    from vivit_jax.models.vivit import SpaceTimeViViT

    nt, nh, nw = grid
    token = model.classifier == "token"
    if isinstance(model, SpaceTimeViViT):
        spatial = _encoder_rollout(
            sown, "SpatialTransformer", model.spatial.num_layers, token, (nt,)
        )
        if model.spatial_only_baseline:
            frames = jnp.full((nt,), 1.0 / nt)
        else:
            frames = _encoder_rollout(sown, "TemporalTransformer", model.temporal.num_layers, token)
        flat = frames[:, None] * spatial
    elif model.attention_type == "spacetime":
        flat = _encoder_rollout(sown, "Transformer", model.encoder.num_layers, token)
    else:
        flat = _factorised_rollout(model, sown, (nt, nh * nw))
    return flat.reshape(nt, nh, nw)


def token_grid(model, input_shape) -> tuple[int, int, int]:
    """`(nt, nh, nw)` of the model's tokens for `(T, H, W, 3)` inputs."""
    t, h, w = input_shape[:3]
    ph, pw = model.patch_size[:2]
    nt = (
        model.n_sampled_frames
        if model.tokenizer == "temporal_sampling"
        else t // model.patch_size[2]
    )
    return nt, h // ph, w // pw


def pixel_maps(model, tubelets: np.ndarray, input_shape) -> tuple[np.ndarray, np.ndarray]:
    """Tubelet weights `[nt, nh, nw]` → (per-frame maps `[T, H, W]`, frame weights `[T]`).

    Each pixel gets its tubelet's weight; a frame's weight is the sum of its tubelets' divided by
    the frames a tubelet spans (so frame weights sum to 1). Frames uniform sampling skips get
    zeros.
    """
    from vivit_jax.models.tokenizers import sampled_frame_indices

    t = input_shape[0]
    ph, pw = model.patch_size[:2]
    tubelets = np.asarray(tubelets, np.float32)
    spatial = tubelets.repeat(ph, axis=1).repeat(pw, axis=2)  # [nt, H, W]
    maps = np.zeros((t,) + spatial.shape[1:], np.float32)
    weights = np.zeros((t,), np.float32)
    if model.tokenizer == "temporal_sampling":
        for i, f in enumerate(sampled_frame_indices(t, model.n_sampled_frames)):
            maps[f], weights[f] = spatial[i], tubelets[i].sum()
    else:
        ft = model.patch_size[2]
        for f in range(t):
            maps[f], weights[f] = spatial[f // ft], tubelets[f // ft].sum() / ft
    return maps, weights


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB of the colour map."""
    x = np.clip(values, 0.0, 1.0) * (len(_COLOURS) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(_COLOURS) - 2)
    frac = (x - lo)[..., None]
    return np.round(_COLOURS[lo] * (1 - frac) + _COLOURS[lo + 1] * frac).astype(np.uint8)


def overlay(frame: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A uint8 frame under a [0, 1] heat map."""
    mixed = 0.45 * frame.astype(np.float32) + 0.55 * colourise(heat).astype(np.float32)
    return np.round(mixed).astype(np.uint8)


def _upscale(x: np.ndarray, s: int) -> np.ndarray:
    return x.repeat(s, axis=0).repeat(s, axis=1)


def _bar(weights: np.ndarray, width: int, height: int, current: int | None) -> np.ndarray:
    """A bar chart of the frame weights (relative to the largest), `current` highlighted."""
    bar = np.full((height, width, 3), 24, np.uint8)
    edges = np.linspace(0, width, len(weights) + 1).round().astype(int)
    top = max(float(weights.max()), 1e-12)
    for f, w in enumerate(weights):
        h = int(round((height - 2) * float(w) / top))
        colour = (255, 80, 40) if f == current else (200, 200, 200)
        if h:
            bar[height - h :, edges[f] : max(edges[f + 1] - 1, edges[f] + 1)] = colour
    return bar


def _even(x: np.ndarray) -> np.ndarray:
    """Pads height and width to even sizes (the yuv420p codecs need them)."""
    return np.pad(x, ((0, x.shape[0] % 2), (0, x.shape[1] % 2), (0, 0)))


def render(frames: np.ndarray, maps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The video: per frame `[frame | frame under heat]` above the weight bars."""
    s = max(1, -(-MIN_DISPLAY_SIZE // frames.shape[1]))
    out = []
    for f, (frame, heat) in enumerate(zip(frames, maps)):
        top = max(float(heat.max()), 1e-12)
        pair = np.concatenate([frame, overlay(frame, heat / top)], axis=1)
        pair = _upscale(pair, s)
        bar = _bar(weights, pair.shape[1], max(12, pair.shape[0] // 6), f)
        out.append(_even(np.concatenate([pair, bar], axis=0)))
    return np.stack(out)


def strip(frames: np.ndarray, maps: np.ndarray, weights: np.ndarray, title: str):
    """A PIL image: up to `MAX_STRIP_FRAMES` frames over their maps and weight bars."""
    from PIL import Image, ImageDraw

    count = min(len(frames), MAX_STRIP_FRAMES)
    chosen = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
    s = max(1, -(-MIN_DISPLAY_SIZE // frames.shape[1]))
    top = max(float(weights.max()), 1e-12)
    columns = []
    for f in chosen:
        frame, heat = _upscale(frames[f], s), _upscale(maps[f], s)
        size = frame.shape[1]
        bar = np.full((16, size, 3), 24, np.uint8)
        bar[2:14, : max(1, int(round(size * float(weights[f]) / top)))] = (255, 80, 40)
        heat = heat / max(float(heat.max()), 1e-12)
        gap = np.full((4, size, 3), 255, np.uint8)
        columns.append(np.concatenate([frame, gap, overlay(frame, heat), gap, bar], axis=0))
        columns.append(np.full((columns[-1].shape[0], 4, 3), 255, np.uint8))
    body = np.concatenate(columns[:-1], axis=1)
    image = Image.new("RGB", (body.shape[1], body.shape[0] + 18), (255, 255, 255))
    image.paste(Image.fromarray(body), (0, 18))
    ImageDraw.Draw(image).text((2, 3), title, fill=(0, 0, 0))
    return image


def to_uint8(view: np.ndarray, zero_centering: bool) -> np.ndarray:
    """A normalised view (`[-1, 1]` or `[0, 1]`) back to uint8 RGB for display."""
    x = (view + 1.0) * 127.5 if zero_centering else view * 255.0
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


class Explainer:
    """Attention maps of a `vivit_jax.predict.Predictor`'s model.

    Args:
      predictor: The model, its parameters and config.
    """

    def __init__(self, predictor):
        self.predictor = predictor
        self.config = predictor.config
        self.model = explained_model(predictor.config, predictor.num_classes)
        ds = self.config.dataset_configs
        self.input_shape = (ds.num_frames, ds.crop_size, ds.crop_size, 3)
        self.grid = token_grid(self.model, self.input_shape)
        self._maps = jax.jit(self._tubelets)

    def _tubelets(self, params, view):
        logits, sown = attention_weights(self.model, params, view[None])
        return logits[0], tubelet_map(self.model, sown, self.grid)

    def tubelets(self, view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One normalised view `[T, H, W, 3]` → (logits `[C]`, tubelet map `[nt, nh, nw]`)."""
        logits, tubelets = self._maps(self.predictor.params, view)
        return np.asarray(logits), np.asarray(tubelets)

    def central_view(self, path: str) -> np.ndarray:
        """The middle clip's centre crop of the test views of the video at `path`."""
        from vivit_jax.data.pipeline import video_test_views
        from vivit_jax.data.video_io import decode_video

        ds = self.config.dataset_configs
        views = video_test_views(decode_video(path, short_side=ds.min_resize).frames, ds)
        crop = 1 if ds.do_three_spatial_crops else 0
        return views[crop * ds.num_test_clips + ds.num_test_clips // 2]

    def __call__(self, path: str, directory: str) -> tuple[str, str]:
        """Writes `<directory>/<stem>.attention.{mp4,png}` for the video; returns their paths."""
        from vivit_jax.data.video_io import write_video

        view = self.central_view(path)
        logits, tubelets = self.tubelets(view)
        maps, weights = pixel_maps(self.model, tubelets, self.input_shape)
        frames = to_uint8(view, bool(self.config.dataset_configs.zero_centering))
        os.makedirs(directory, exist_ok=True)
        stem = os.path.join(directory, os.path.splitext(os.path.basename(path))[0])
        video, image = f"{stem}.attention.mp4", f"{stem}.attention.png"
        write_video(video, render(frames, maps, weights), fps=8)
        strip(frames, maps, weights, self._title(path, logits)).save(image, optimize=True)
        return video, image

    def _title(self, path: str, logits: np.ndarray) -> str:
        """'<file>: top-1 <class>' of this view (per head for the multi-head model)."""
        from vivit_jax import eval_results

        names = self.predictor.class_names
        splits = eval_results.config_class_splits(self.config) or (len(logits),)
        bounds = np.cumsum((0, *splits))
        best = [names[lo + int(np.argmax(logits[lo:hi]))] for lo, hi in zip(bounds, bounds[1:])]
        return f"{os.path.basename(path)}: top-1 of this view: {', '.join(best)}"
