r"""The top classes of video files, with the test protocol of a config.

    python -m vivit_jax.predict --checkpoint=/models/vivit-b-16x2-kinetics400 video.mp4
    python -m vivit_jax.predict --config=configs/demo.py --checkpoint=/tmp/vivit_demo \
        a.mp4 b.webm [--class_names=names.txt] [--top_k=5]

Each file is decoded with PyAV, its frames resized so that the short side is
`dataset_configs.min_resize`, and cut into the test views exactly as the input pipeline's
`test_iter` does (`num_test_clips` clips × 1 or 3 crops of `crop_size`); the views' logits are
averaged as in `vivit_jax.evaluate` and turned into probabilities (softmax; per head for the
multi-head model, sigmoid for the multi-label one).

`--checkpoint` takes whatever `vivit_jax.evaluate` takes (Scenic, orbax, HuggingFace). Without
`--config` it must be a HuggingFace ViViT directory: its `config.json` gives the model and the
input (`num_frames`, `image_size`); frames are sampled at stride 2, the short side resized to
256/224 of the crop, one central view. Class names come from `--class_names` (a text file with
one name per line, or a JSON list), else the HuggingFace `id2label`, else the config's dataset
(when its TFDS builder names them); else indices are printed.

Runs on any JAX device (CPU included); the time of each step is printed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time

import jax
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from vivit_jax import config_lib, cpu_tuning, eval_results, evaluate, losses


def _define_flags() -> flags.FlagValues:
    """The command's own flags (not absl's global ones, which `vivit_jax.main` uses)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Experiment config (configs/*.py[:arg]); optional for HuggingFace models.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "checkpoint",
        None,
        "Checkpoint: Scenic file, orbax workdir/step, HuggingFace directory.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "class_names", None, "File of class names: one per line, or a JSON list.", flag_values=fv
    )
    flags.DEFINE_integer("top_k", 5, "Classes printed per video (and head).", flag_values=fv)
    return fv


@dataclasses.dataclass
class Prediction:
    """Attributes:
    path: The video file.
    top: {head name (None for a single head): [(class name, probability), ...]}.
    num_frames: Frames decoded.
    num_views: Views the model saw.
    decode_seconds: Decoding, resizing and cutting the views.
    model_seconds: The forward passes (the first video includes compilation).
    """

    path: str
    top: dict
    num_frames: int
    num_views: int
    decode_seconds: float
    model_seconds: float


def huggingface_config(directory: str) -> config_lib.ConfigDict:
    """A prediction config for a HuggingFace ViViT directory (its input size, one view)."""
    from vivit_jax.checkpoints.huggingface import read_config

    hf = read_config(directory)
    size = int(hf.get("image_size", 224))
    config = config_lib.default_config()
    config.experiment_name = f"predict_{os.path.basename(os.path.normpath(directory))}"
    config.dataset_name = "none (prediction)"
    config.num_training_steps = 1
    config.model.attention_config.type = "spacetime"  # HF ViViT is Model 1.
    ds = config.dataset_configs
    ds.num_frames = int(hf.get("num_frames", 32))
    ds.stride = 2
    ds.crop_size = size
    ds.min_resize = size * 256 // 224
    return config


def read_class_names(path: str) -> list[str]:
    """One name per line, or a JSON list (or a {index: name} mapping)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(data, dict):
        return [str(data[k]) for k in sorted(data, key=int)]
    return [str(x) for x in data]


def _dataset_class_names(config) -> list[str] | None:
    try:
        import tensorflow_datasets as tfds

        import vivit_jax.data  # noqa: F401  (registers the builders)

        builder = tfds.builder(config.dataset_name, data_dir=config.dataset_configs.data_dir)
        return list(builder.info.features["label"].names)
    except Exception as e:  # noqa: BLE001 - names are a convenience.
        logging.info("No class names from dataset %r: %s", config.dataset_name, e)
        return None


class Predictor:
    """A model with its parameters and test protocol, ready for video files.

    Args:
      checkpoint: Any checkpoint `vivit_jax.evaluate.load_checkpoint` reads.
      config: The experiment config, or None for a HuggingFace directory.
      class_names: Overrides the names found elsewhere.
    """

    def __init__(self, checkpoint: str, config=None, class_names: list[str] | None = None):
        from vivit_jax.models import create_model, validate_input_shape

        ckpt = evaluate.load_checkpoint(checkpoint)
        if config is None:
            if ckpt.model_config is None:
                raise ValueError(
                    f"{checkpoint} is not a HuggingFace ViViT directory: pass the --config the "
                    "model was trained with."
                )
            config = huggingface_config(ckpt.path)
        config = evaluate.with_checkpoint_model(config_lib.complete_config(config), ckpt)
        head = ckpt.params.get("output_projection", {}).get("bias")
        if head is None:
            raise ValueError(f"{checkpoint} has no classifier (output_projection).")
        self.num_classes = int(np.shape(head)[0])
        ds = config.dataset_configs
        input_shape = (ds.num_frames, ds.crop_size, ds.crop_size, 3)
        validate_input_shape(config.model, input_shape)
        self.model = create_model(config.model, self.num_classes, dtype=config.model_dtype_str)
        abstract = jax.eval_shape(
            lambda: self.model.init(
                jax.random.key(0), np.zeros((1, *input_shape), np.float32), train=False
            )
        )["params"]
        self.params = jax.device_put(evaluate.fit_params(ckpt.params, abstract, self.num_classes))
        self.config = config
        self.class_names = self._names(class_names or ckpt.class_names)
        self._step = jax.jit(
            functools.partial(evaluate.multiview_step, model=self.model, config=config),
            compiler_options=cpu_tuning.compiler_options(),
        )

    def _names(self, names) -> list[str]:
        names = names or _dataset_class_names(self.config)
        if names is not None and len(names) != self.num_classes:
            logging.warning(
                "%d class names for %d classes; printing indices.", len(names), self.num_classes
            )
            names = None
        return [str(n) for n in names] if names else [str(i) for i in range(self.num_classes)]

    def probabilities(self, views: np.ndarray) -> np.ndarray:
        """`[V, T, H, W, 3]` views of one video → `[C]` probabilities."""
        c = self.num_classes
        batch = {
            "inputs": views[None],
            "label": np.zeros((1, c), np.float32),
            "batch_mask": np.ones((1,), np.float32),
            "video_index": np.zeros((1,), np.int32),
        }
        scores = np.asarray(self._step(self.params, batch)["scores"][0], np.float32)
        if self.config.multicrop_softmax_logits:
            return scores
        if self.config.model_name == "vivit_multilabel_classification":
            return 1.0 / (1.0 + np.exp(-scores))
        splits = eval_results.config_class_splits(self.config)
        heads = losses.split_heads(scores, splits) if splits else [scores]
        return np.concatenate([np.exp(h - h.max()) / np.exp(h - h.max()).sum() for h in heads])

    def __call__(self, path: str, top_k: int = 5) -> Prediction:
        from vivit_jax.data.pipeline import video_test_views
        from vivit_jax.data.video_io import decode_video

        start = time.perf_counter()
        ds = self.config.dataset_configs
        video = decode_video(path, short_side=ds.min_resize)
        if video.error:
            logging.warning("%s: decoding stopped early (%s).", path, video.error)
        views = video_test_views(video.frames, ds)
        decoded = time.perf_counter()
        probs = self.probabilities(views)
        done = time.perf_counter()
        splits = eval_results.config_class_splits(self.config)
        if splits:
            names = eval_results.config_head_names(self.config)
            bounds = np.cumsum((0, *splits))
            parts = {
                n: (probs[lo:hi], eval_results.head_class_names(self.class_names, lo, hi))
                for n, lo, hi in zip(names, bounds[:-1], bounds[1:])
            }
        else:
            parts = {None: (probs, self.class_names)}
        top = {
            head: [(names[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:top_k]]
            for head, (p, names) in parts.items()
        }
        return Prediction(path, top, len(video.frames), len(views), decoded - start, done - decoded)


def format_prediction(p: Prediction) -> str:
    lines = [
        f"{p.path}: {p.num_views} view(s) of {p.num_frames} frames; decode {p.decode_seconds:.2f} s, "
        f"model {p.model_seconds:.2f} s"
    ]
    for head, entries in p.top.items():
        indent = "  "
        if head is not None:
            lines.append(f"  {head}:")
            indent = "    "
        lines += [f"{indent}{prob:7.4f}  {name}" for name, prob in entries]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m vivit_jax.predict [flags] video [video ...]`; returns the exit status."""
    fv = _define_flags()
    try:
        paths = fv(sys.argv if argv is None else argv)[1:]
    except flags.Error as e:
        print(f"{e}\nUsage: python -m vivit_jax.predict --checkpoint=... [--config=...] video ...")
        return 2
    if not paths or not fv.checkpoint:
        print("Usage: python -m vivit_jax.predict --checkpoint=... [--config=...] video ...")
        return 2
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        print(f"No such file: {', '.join(missing)}")
        return 2
    start = time.perf_counter()
    names = read_class_names(fv.class_names) if fv.class_names else None
    predictor = Predictor(fv.checkpoint, fv.config, names)
    loaded = time.perf_counter()
    for path in paths:
        print(format_prediction(predictor(path, fv.top_k)), flush=True)
    end = time.perf_counter()
    device = jax.devices()[0]
    print(
        f"{len(paths)} video(s) in {end - start:.1f} s on {device.platform} ({device.device_kind}):"
        f" loading {loaded - start:.1f} s, prediction {end - loaded:.1f} s (the first video's "
        "model time includes compilation)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
