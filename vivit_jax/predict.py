r"""The top classes of video files, with the test protocol of a config.

    python -m vivit_jax.predict --checkpoint=/models/vivit-b-16x2-kinetics400 video.mp4
    python -m vivit_jax.predict --config=configs/demo.py --checkpoint=/tmp/vivit_demo \
        a.mp4 b.webm clips/ [--class_names=names.txt] [--top_k=5]

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
(when its TFDS builder names them); else indices are printed. A `--class_names` file must hold
one name per class of the checkpoint.

A directory argument stands for the video files inside it (recursively, sorted; extensions
`.mp4 .avi .mkv .webm .mov` in any case; hidden files and folders skipped). Every input is tried:
one that cannot be predicted (missing, a directory without videos, no video stream, not
decodable) is reported on one line, `<path>: failed: <reason>`, and the others are still
predicted; the model is not loaded when no input is left. The last line counts the videos
predicted and the inputs that failed, naming them. Exit status: 0 when every input was
predicted, 1 when any failed or when `--class_names` or `--checkpoint` cannot be read (one
`error:` line on stderr), 2 for usage errors.

With `--explain=<dir>`, each predicted video also gets `<dir>/<video stem>.attention.mp4` and
`.attention.png`: its central view under the attention rollout map of `vivit_jax.explain`.

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

from vivit_jax import backends, config_files, config_lib, eval_results, evaluate, losses
from vivit_jax.checkpoints import loading
from vivit_jax.data.video_io import VIDEO_EXTENSIONS, VideoDecodeError


def _define_flags(argv: list[str]) -> flags.FlagValues:
    """The command's own flags (not absl's global ones, which `vivit_jax.main` uses)."""
    fv = flags.FlagValues()
    config_files.define_config_flag(
        "config",
        "Experiment config (configs/*.py[:arg]); optional for HuggingFace models.",
        flag_values=fv,
        sys_argv=argv,
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
    flags.DEFINE_string(
        "explain",
        None,
        "Directory for attention maps: <stem>.attention.mp4 and .png per video "
        "(vivit_jax.explain).",
        flag_values=fv,
    )
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


class ClassNamesError(ValueError):
    """The class names given do not fit the model."""


def read_class_names(path: str) -> list[str]:
    """One name per line, or a JSON list (or a {index: name} mapping).

    Raises:
      OSError: the file cannot be read.
      ValueError: it is not UTF-8 text, holds no name, or is a mapping whose keys are not the
        indices 0, 1, ...
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        try:
            keys = sorted(data, key=int)
        except ValueError:
            keys = None
        if keys is None or [int(k) for k in keys] != list(range(len(keys))):
            raise ValueError(f"{path}: a JSON mapping's keys must be the class indices 0, 1, ...")
        names = [str(data[k]) for k in keys]
    elif isinstance(data, list):
        names = [str(x) for x in data]
    else:  # Not JSON, or one line that happens to be a JSON scalar (a name such as 42).
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path} holds no class names.")
    return names


def _dataset_class_names(config) -> list[str] | None:
    try:
        from vivit_jax.data.sources import PreparedDataset

        return PreparedDataset(config.dataset_name, config.dataset_configs.data_dir).class_names()
    except Exception as e:  # noqa: BLE001 - names are a convenience.
        logging.info("No class names from dataset %r: %s", config.dataset_name, e)
        return None


class Predictor:
    """A model with its parameters and test protocol, ready for video files.

    Args:
      checkpoint: Any checkpoint `vivit_jax.checkpoints.loading.load_checkpoint` reads.
      config: The experiment config, or None for a HuggingFace directory.
      class_names: Overrides the names found elsewhere.
      backend: What the platform adds (`vivit_jax.backends.for_platform`).

    Raises:
      ClassNamesError: `class_names` is not one name per class of the checkpoint.
    """

    def __init__(
        self,
        checkpoint: str,
        config=None,
        class_names: list[str] | None = None,
        backend: backends.Backend = backends.PLAIN,
    ):
        from vivit_jax.models import create_model, validate_input_shape

        ckpt = loading.load_checkpoint(checkpoint)
        if config is None:
            if ckpt.model_config is None:
                raise ValueError(
                    f"{checkpoint} is not a HuggingFace ViViT directory: pass the --config the "
                    "model was trained with."
                )
            config = huggingface_config(ckpt.path)
        config = loading.with_checkpoint_model(config_lib.complete_config(config), ckpt)
        head = ckpt.params.get("output_projection", {}).get("bias")
        if head is None:
            raise ValueError(f"{checkpoint} has no classifier (output_projection).")
        self.num_classes = int(np.shape(head)[0])
        ds = config.dataset_configs
        input_shape = (ds.num_frames, ds.crop_size, ds.crop_size, 3)
        validate_input_shape(config.model, input_shape)
        self.model = create_model(
            config.model,
            self.num_classes,
            dtype=config.model_dtype_str,
            fused_attention=backend.fused_attention,
        )
        abstract = jax.eval_shape(
            lambda: self.model.init(
                jax.random.key(0), np.zeros((1, *input_shape), np.float32), train=False
            )
        )["params"]
        self.params = jax.device_put(loading.fit_params(ckpt.params, abstract, self.num_classes))
        self.config = config
        if class_names is not None and len(class_names) != self.num_classes:
            raise ClassNamesError(
                f"{len(class_names)} class names for the {self.num_classes} classes of {checkpoint}."
            )
        self.class_names = self._names(class_names or ckpt.class_names)
        self._step = jax.jit(
            functools.partial(evaluate.multiview_step, model=self.model, config=config),
            compiler_options=backend.compiler_options,
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


def one_line(e: BaseException, limit: int = 400) -> str:
    """An exception as one line of at most `limit` characters (FFmpeg/orbax messages can span
    several)."""
    named = isinstance(e, (VideoDecodeError, ClassNamesError))  # Their messages say it all.
    text = str(e) if named else f"{type(e).__name__}: {e}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _directory_videos(directory: str) -> tuple[list[str], str | None]:
    """The video files under `directory` (sorted), and why it counts as failed (else None):
    no video inside, or parts that could not be read."""

    found, problems = [], []

    def note(error: OSError) -> None:
        problems.append(f"cannot read {error.filename}: {error.strerror}")

    for root, dirs, files in os.walk(directory, onerror=note):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            os.path.join(root, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS
        ]
    if not found and not problems:
        problems.append(f"no video files (looked for {' '.join(VIDEO_EXTENSIONS)})")
    return sorted(found), "; ".join(problems) or None


def expand_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The video files `paths` name (a directory: the videos inside it) and the inputs that
    name none, as (path, reason)."""
    videos, failed = [], []
    for path in paths:
        if os.path.isdir(path):
            found, problem = _directory_videos(path)
            videos += found
            if problem:
                failed.append((path, problem))
        elif os.path.isfile(path):
            videos.append(path)
        else:
            failed.append((path, "no such file" if not os.path.exists(path) else "not a file"))
    return videos, failed


def _fail(path: str, reason: str) -> None:
    print(f"{path}: failed: {reason}", flush=True)


def error_exit(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def _summary(predicted: int, failed: list[str]) -> str:
    line = f"Predicted {predicted} video(s); {len(failed)} input(s) failed"
    return line + (f": {', '.join(failed)}" if failed else ".")


def main(argv: list[str] | None = None) -> int:
    """`python -m vivit_jax.predict [flags] video|directory ...`; returns the exit status."""
    argv = sys.argv if argv is None else argv
    fv = _define_flags(argv)
    usage = "Usage: python -m vivit_jax.predict --checkpoint=... [--config=...] video|directory ..."
    try:
        paths = fv(argv)[1:]
    except flags.Error as e:
        print(f"{e}\n{usage}")
        return 2
    if not paths or not fv.checkpoint:
        print(usage)
        return 2
    start = time.perf_counter()
    try:
        names = read_class_names(fv.class_names) if fv.class_names else None
    except (OSError, ValueError) as e:
        return error_exit(f"--class_names={fv.class_names}: {one_line(e)}")
    videos, bad = expand_inputs(paths)
    for path, reason in bad:
        _fail(path, reason)
    failed = [path for path, _ in bad]
    if not videos:
        print(_summary(0, failed))
        return 1
    try:
        predictor = Predictor(fv.checkpoint, fv.config, names, backends.for_platform())
    except ClassNamesError as e:
        return error_exit(f"--class_names={fv.class_names}: {one_line(e)}")
    except Exception as e:  # noqa: BLE001 - any reason the model cannot be built is fatal.
        return error_exit(f"cannot load --checkpoint={fv.checkpoint}: {one_line(e)}")
    explainer = None
    if fv.explain:
        from vivit_jax.explain import Explainer

        explainer = Explainer(predictor)
    loaded = time.perf_counter()
    predicted = 0
    for path in videos:
        try:
            print(format_prediction(predictor(path, fv.top_k)), flush=True)
            if explainer is not None:
                print("  attention: {}, {}".format(*explainer(path, fv.explain)), flush=True)
            predicted += 1
        except Exception as e:  # noqa: BLE001 - one bad video must not stop the others.
            _fail(path, one_line(e))
            failed.append(path)
    end = time.perf_counter()
    device = jax.devices()[0]
    print(
        f"{len(videos)} video file(s) tried in {end - start:.1f} s on {device.platform} "
        f"({device.device_kind}): loading {loaded - start:.1f} s, prediction {end - loaded:.1f} s "
        "(the first video's model time includes compilation)."
    )
    print(_summary(predicted, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
