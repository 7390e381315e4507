r"""A trained model as files that run without this package: `jax.export` and a TF SavedModel.

    python -m vivit_jax.export --config=configs/demo.py --checkpoint=/tmp/vivit_demo \
        --output=/tmp/vivit_demo_export [--platforms=cpu,cuda,tpu]

`--checkpoint` takes whatever `vivit_jax.predict` takes (Scenic, orbax workdir or step,
HuggingFace directory, npz); `--config` the experiment config it was trained with (optional for
a HuggingFace directory). `<output>/` receives:

  model.jax_export  `jax.export` serialisation (StableHLO) of `frames -> logits`: frames uint8
                    `[B, T, H, W, 3]`, already sampled and cropped to the model's input
                    (`dataset_configs.num_frames` × `crop_size`²; B is symbolic: any batch runs),
                    logits float32 `[B, num_classes]`. The scaling to [-1, 1]
                    (`dataset_configs.zero_centering`; [0, 1] without it) is inside. Load it with
                    `jax.export.deserialize(open(f, 'rb').read()).call(frames)`.
  saved_model/      a TF SavedModel (`jax2tf`) whose `serving_default` signature takes the same
                    `frames` and returns `logits` and `probabilities` (softmax; sigmoid for
                    `vivit_multilabel_classification`; softmax per head for the multi-head
                    model); the parameters are its variables.
  labels.json       the class names (list), or null when only indices are known.
  export.json       input shape and dtype, frames, crop, preprocessing keys, variant,
                    classifier, model_name, heads (name, size) of a multi-head model, the
                    normalisation, the source checkpoint, platforms and the versions of jax,
                    flax, tensorflow and vivit_jax.

A multi-head model (EPIC-Kitchens) exports both heads: the logits are their concatenation, in the
order and sizes export.json's `heads` lists. The programs are lowered for the platform exporting
and the CPU (`--platforms` for more: any of cpu, cuda, rocm, tpu); attention is XLA's (not the
cuDNN or CPU kernels), so one program runs on each. The jax.export file holds the parameters as
constants: its format takes up to 2 GB of them (ViViT-L in float32 fits; ViViT-H does not, while
its SavedModel does).

Exit status: 0 on success; 1 with one `error:` line on stderr when the checkpoint cannot be read
or does not fit the config (another variant or width); 2 for usage errors.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import sys

import jax
import jax.numpy as jnp
from absl import flags, logging

from vivit_jax import __version__, backends, config_files, eval_results, evaluate
from vivit_jax.data import augment

JAX_EXPORT_FILE = "model.jax_export"
SAVED_MODEL_DIR = "saved_model"
LABELS_FILE = "labels.json"
METADATA_FILE = "export.json"
EXPORT_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def probabilities(logits: jax.Array, config) -> jax.Array:
    """`[B, C]` logits → probabilities, as the evaluation turns them: softmax (per head for the
    multi-head model) or sigmoid (multi-label)."""
    return evaluate.average_views(
        logits[:, None],
        True,
        multilabel=config.model_name == "vivit_multilabel_classification",
        class_splits=eval_results.config_class_splits(config),
    )


def portable_model(model):
    """`model` with attention that lowers on every platform (einsum, or XLA's fused path)."""
    from vivit_jax.models.attention import EINSUM, XLA, Attention

    kind = EINSUM if model.attention.kind == EINSUM else XLA
    return model.clone(attention=Attention(kind))


def inference_fn(model, config):
    """`(params, uint8 frames [B, T, H, W, 3]) -> (logits, probabilities)`, both float32."""
    zero_centering = bool(config.dataset_configs.zero_centering)

    def fn(params, frames):
        x = augment.normalize(frames, zero_centering)
        logits = model.apply({"params": params}, x, train=False).astype(jnp.float32)
        return logits, probabilities(logits, config)

    return fn


def default_platforms() -> list[str]:
    """The platform exporting, and the CPU."""
    return list(dict.fromkeys([jax.export.default_export_platform(), "cpu"]))


@dataclasses.dataclass
class Exported:
    """What `export` wrote (paths) and the input shape `(T, H, W, 3)`."""

    directory: str
    jax_export: str
    saved_model: str
    labels: str
    metadata: str
    input_shape: tuple[int, ...]


def input_shape(config) -> tuple[int, int, int, int]:
    ds = config.dataset_configs
    return (int(ds.num_frames), int(ds.crop_size), int(ds.crop_size), 3)


def export(predictor, checkpoint: str, output: str, platforms: list[str] | None = None) -> Exported:
    """Writes the files of the module docstring for a `vivit_jax.predict.Predictor` of the
    checkpoint `checkpoint` (recorded in export.json)."""
    platforms = list(platforms or default_platforms())
    config = predictor.config
    shape = input_shape(config)
    fn = inference_fn(portable_model(predictor.model), config)
    params = jax.device_get(predictor.params)
    os.makedirs(output, exist_ok=True)
    paths = Exported(
        directory=output,
        jax_export=os.path.join(output, JAX_EXPORT_FILE),
        saved_model=os.path.join(output, SAVED_MODEL_DIR),
        labels=os.path.join(output, LABELS_FILE),
        metadata=os.path.join(output, METADATA_FILE),
        input_shape=shape,
    )
    (batch,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, *shape), jnp.uint8)
    logits_only = jax.jit(lambda frames: fn(params, frames)[0])
    exported = jax.export.export(logits_only, platforms=platforms)(spec)
    with open(paths.jax_export, "wb") as f:
        f.write(exported.serialize())
    tf_version = _saved_model(fn, params, shape, paths.saved_model, platforms)
    names = predictor.class_names
    if names == [str(i) for i in range(predictor.num_classes)]:
        names = None
    _write_json(paths.labels, names)
    meta = metadata(predictor, checkpoint, shape, platforms)
    meta["versions"]["tensorflow"] = tf_version
    _write_json(paths.metadata, meta)
    return paths


def _saved_model(fn, params, shape, directory: str, platforms: list[str]) -> str:
    """The SavedModel of `fn`, parameters as (non-trainable) variables; returns TF's version."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    t, h, w, c = shape
    tf_fn = jax2tf.convert(
        fn,
        polymorphic_shapes=[None, f"(b, {t}, {h}, {w}, {c})"],
        with_gradient=False,
        native_serialization_platforms=platforms,
    )
    module = tf.Module()
    module.params = tf.nest.map_structure(lambda p: tf.Variable(p, trainable=False), params)

    @tf.function(
        input_signature=[tf.TensorSpec((None, t, h, w, c), tf.uint8, name="frames")],
        autograph=False,
    )
    def serve(frames):
        logits, probs = tf_fn(module.params, frames)
        return {"logits": logits, "probabilities": probs}

    module.serve = serve
    tf.saved_model.save(module, directory, signatures={"serving_default": serve})
    return tf.__version__


def checkpoint_info(checkpoint: str) -> dict:
    """The source checkpoint as given and its format (`checkpoints.formats.detect_format`)."""
    from vivit_jax.checkpoints.formats import detect_format

    fmt, path = detect_format(os.fspath(checkpoint))
    return {"path": os.path.abspath(checkpoint), "format": fmt, "read": os.path.abspath(path)}


def metadata(predictor, checkpoint: str, shape, platforms) -> dict:
    """The contents of export.json."""
    config = predictor.config
    ds = config.dataset_configs
    splits = eval_results.config_class_splits(config)
    heads = None
    if splits:
        heads = [
            {"name": n, "size": s} for n, s in zip(eval_results.config_head_names(config), splits)
        ]
    zero = bool(ds.zero_centering)
    return {
        "input": {
            "shape": [None, *shape],
            "dtype": "uint8",
            "layout": "[batch, frames, height, width, RGB]",
        },
        "num_frames": int(ds.num_frames),
        "crop_size": int(ds.crop_size),
        "preprocessing": {
            "stride": int(ds.stride),
            "min_resize": int(ds.min_resize),
            "num_test_clips": int(ds.num_test_clips),
            "do_three_spatial_crops": bool(ds.do_three_spatial_crops),
        },
        "normalisation": {
            "zero_centering": zero,
            "range": [-1.0, 1.0] if zero else [0.0, 1.0],
            "formula": "x * 2 / 255 - 1" if zero else "x / 255",
        },
        "output": {"logits": [None, predictor.num_classes], "dtype": "float32"},
        "num_classes": predictor.num_classes,
        "model_name": config.model_name,
        "variant": config.model.attention_config.type,
        "classifier": config.model.classifier,
        "model_dtype": config.model_dtype_str,
        "class_splits": list(splits) if splits else None,
        "heads": heads,
        "checkpoint": checkpoint_info(checkpoint),
        "experiment_name": config.experiment_name,
        "platforms": list(platforms),
        "versions": {
            "jax": jax.__version__,
            "flax": importlib.metadata.version("flax"),
            "vivit_jax": __version__,
        },
    }


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    config_files.define_config_flag(
        "config",
        "Experiment config (configs/*.py[:arg]); optional for HuggingFace models.",
        flag_values=fv,
        sys_argv=argv,
    )
    flags.DEFINE_string(
        "checkpoint", None, "Checkpoint: Scenic, orbax, HuggingFace, npz.", flag_values=fv
    )
    flags.DEFINE_string("output", None, "Directory for the exported files.", flag_values=fv)
    flags.DEFINE_list(
        "platforms",
        None,
        f"Lowering platforms (of {EXPORT_PLATFORMS}); default: this one and cpu.",
        flag_values=fv,
    )
    return fv


def main(argv: list[str] | None = None) -> int:
    """`python -m vivit_jax.export --checkpoint=... --output=... [--config=...]`."""
    from vivit_jax import predict

    argv = sys.argv if argv is None else argv
    fv = _define_flags(argv)
    usage = "Usage: python -m vivit_jax.export --checkpoint=... --output=DIR [--config=...]"
    try:
        rest = fv(argv)[1:]
    except flags.Error as e:
        print(f"{e}\n{usage}")
        return 2
    if rest or not fv.checkpoint or not fv.output:
        print(usage)
        return 2
    bad = [p for p in fv.platforms or () if p not in EXPORT_PLATFORMS]
    if bad:
        print(f"--platforms: unknown {bad}; known: {', '.join(EXPORT_PLATFORMS)}.\n{usage}")
        return 2
    try:
        predictor = predict.Predictor(fv.checkpoint, fv.config, backend=backends.PLAIN)
    except Exception as e:  # noqa: BLE001 - any reason the model cannot be built is fatal.
        return predict.error_exit(
            f"cannot load --checkpoint={fv.checkpoint}: {predict.one_line(e)}"
        )
    paths = export(predictor, fv.checkpoint, fv.output, fv.platforms)
    logging.info("Exported %s.", paths)
    print(
        f"Exported {fv.checkpoint} ({predictor.config.model.attention_config.type}, "
        f"{predictor.num_classes} classes, input uint8 [B, {', '.join(map(str, paths.input_shape))}]) "
        f"to {fv.output}: {JAX_EXPORT_FILE}, {SAVED_MODEL_DIR}/, {LABELS_FILE}, {METADATA_FILE}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
