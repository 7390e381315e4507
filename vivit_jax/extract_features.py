r"""Video representations of a trained model: the input of its classifier, one row per video.

    python -m vivit_jax.extract_features --config=configs/demo.py --checkpoint=/tmp/vivit_demo \
        --output=/tmp/features.npz a.mp4 clips/ [--batch_size=16]
    python -m vivit_jax.extract_features --config=configs/demo.py --checkpoint=/tmp/vivit_demo \
        --output=/tmp/features.npz --split=validation

The representation is what `output_projection` reads: the class token (or the pooled tokens)
after the last encoder's final LayerNorm, or the `pre_logits` layer's output when
`model.representation_size` is set (`return_prelogits=True`). Each video's is the mean over its
test views, the protocol `vivit_jax.predict` and `vivit_jax.evaluate` use
(`dataset_configs.num_test_clips` clips × 1 or 3 crops, `multicrop_clips_per_device` views per
forward pass).

The output `.npz` holds `features` float32 `[N, D]` and `names` `[N]` (str):
- video files (directories stand for the videos inside, as for predict): the paths as given,
  in the order given; a video that cannot be decoded is reported (`<path>: failed: <reason>`)
  and left out. Decoded on this host (one process).
- `--split=<name>`: `dataset_configs.test_split=<name>` read by the input pipeline
  (`vivit_jax.experiment.default_dataset_fn(...).test_iter()`), every video once, in the
  pipeline's order. Names are the dataset's video ids (the `video_id` a builder stored, the
  `name` of a DMVR record), looked up by the batches' `video_index`; where the dataset has none
  (or its records cannot be read again), the index itself, as text.

Batches of `--batch_size` videos (default: the config's test batch) are split over every device
(the 'data' axis of `vivit_jax.sharding.create_mesh`); the last batch is padded and the padding
dropped. A progress line is printed per batch. Exit status 0, or 1 when any input failed or the
checkpoint cannot be read, 2 for usage errors.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from vivit_jax import backends, config_files, evaluate, experiment, sharding
from vivit_jax.data import augment


def feature_step(params, inputs, batch_mask, video_index, *, model, config):
    """`[B, V, T, H, W, 3]` views (uint8, or normalised floats; `[B, T, H, W, 3]`: one view) →
    `[B, D]` float32, the mean of the views' representations; the mask and index pass through.

    `model` must return the representation (`return_prelogits=True`).
    """
    x = augment.normalize(inputs, bool(config.dataset_configs.zero_centering))
    if x.ndim == 5:
        x = x[:, None]
    b, v = x.shape[:2]
    k = evaluate.views_per_chunk(v, config.multicrop_clips_per_device)
    chunks = jnp.moveaxis(x.reshape((b, v // k, k) + x.shape[2:]), 1, 0)

    def apply(chunk):  # [B, k, ...] → [B, k, D]
        flat = chunk.reshape((b * k,) + chunk.shape[2:])
        out = model.apply({"params": params}, flat, train=False)
        return out.astype(jnp.float32).reshape(b, k, -1)

    features = jax.lax.map(apply, chunks)  # [V/k, B, k, D]
    return jnp.mean(features, axis=(0, 2)), batch_mask, video_index


class FeatureExtractor:
    """A predictor's model returning its representation, jitted over `mesh`.

    Args:
      predictor: A `vivit_jax.predict.Predictor` (model, parameters, config).
      mesh: The device mesh; batches are split over its 'data' axis.
      backend: Compiler options (`vivit_jax.backends.for_platform`).
    """

    def __init__(self, predictor, mesh, backend: backends.Backend = backends.PLAIN):
        self.config = predictor.config
        self.mesh = mesh
        model = predictor.model.clone(return_prelogits=True)
        repl = sharding.replicated(mesh)
        self.params = jax.device_put(predictor.params, repl)
        self.devices = mesh.shape[sharding.DATA]
        self._step = jax.jit(
            functools.partial(feature_step, model=model, config=self.config),
            in_shardings=(repl, *(sharding.batch_sharding(mesh),) * 3),
            out_shardings=repl,
            compiler_options=backend.compiler_options,
        )

    def round_batch(self, batch_size: int) -> int:
        """`batch_size` rounded up to a multiple of the devices on 'data'."""
        return -(-batch_size // self.devices) * self.devices

    def __call__(self, inputs, batch_mask, video_index):
        """Global batch arrays (numpy or placed on the mesh) → numpy (features, mask, index)."""
        put = sharding.batch_sharding(self.mesh)
        args = [
            x if isinstance(x, jax.Array) else jax.device_put(x, put)
            for x in (inputs, batch_mask, video_index)
        ]
        return tuple(np.asarray(a) for a in jax.device_get(self._step(self.params, *args)))


def _progress(done: int, total: int | None, start: float) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    of = f"/{total}" if total else ""
    print(f"features: {done}{of} videos ({rate:.1f} videos/s)", flush=True)


def video_features(extractor: FeatureExtractor, paths: list[str], batch_size: int):
    """Features of video files; returns (features [N, D], names [N], failed [(path, reason)])."""
    from vivit_jax.data.pipeline import video_test_views
    from vivit_jax.data.video_io import decode_video
    from vivit_jax.predict import one_line

    ds = extractor.config.dataset_configs
    batch = extractor.round_batch(batch_size)
    features, names, failed = [], [], []
    start = time.perf_counter()
    for lo in range(0, len(paths), batch):
        views, ok = [], []
        for path in paths[lo : lo + batch]:
            try:
                views.append(
                    video_test_views(decode_video(path, short_side=ds.min_resize).frames, ds)
                )
                ok.append(path)
            except Exception as e:  # noqa: BLE001 - one bad video must not stop the others.
                print(f"{path}: failed: {one_line(e)}", flush=True)
                failed.append((path, one_line(e)))
        if not ok:
            continue
        n = len(ok)
        inputs = np.zeros((batch, *views[0].shape), views[0].dtype)
        inputs[:n] = np.stack(views)
        mask = (np.arange(batch) < n).astype(np.float32)
        out, _, _ = extractor(inputs, mask, np.arange(lo, lo + batch, dtype=np.int32))
        features.append(out[:n])
        names += ok
        _progress(lo + len(paths[lo : lo + batch]), len(paths), start)
    return _stack(features), names, failed


def split_features(
    extractor: FeatureExtractor, split: str, batch_size: int | None = None, dataset_fn=None
):
    """Features of every video of the dataset split `split`, `batch_size` videos a batch
    (default the config's test batch); returns (features, names)."""
    config = extractor.config.copy_and_resolve_references()  # A deep copy: ours to change.
    config.unlock()
    config.dataset_configs.test_split = split
    if batch_size:
        config.dataset_configs.test_batch_size = batch_size
    config = evaluate.round_test_batch(config, extractor.mesh)
    dataset = (dataset_fn or experiment.default_dataset_fn)(
        config, mesh=extractor.mesh, start_step=0
    )
    total = dataset.meta_data.get("num_test_examples") or None
    features, indices = [], []
    start = time.perf_counter()
    for batch in dataset.test_iter():
        out, mask, index = extractor(batch["inputs"], batch["batch_mask"], batch["video_index"])
        keep = mask > 0
        features.append(out[keep])
        indices += [int(i) for i in index[keep]]
        _progress(len(indices), total, start)
    return _stack(features), video_ids(config, indices)


def _stack(features: list[np.ndarray]) -> np.ndarray:
    if features:
        return np.concatenate(features).astype(np.float32)
    return np.zeros((0, 0), np.float32)


def video_ids(config, indices: list[int]) -> list[str]:
    """The test split's video ids of `indices` (see the module docstring), else the indices."""
    try:
        from vivit_jax.data import config as data_config
        from vivit_jax.data.sources import open_split_sources

        factories, _, _ = open_split_sources(
            config.dataset_name, data_config.resolve(config.dataset_configs)
        )
        source = factories["test"]()
        names = [source.get(i)[2] for i in indices]
    except Exception as e:  # noqa: BLE001 - names are a convenience; indices always work.
        logging.warning("No video ids for the split (%s); names are the video indices.", e)
        return [str(i) for i in indices]
    return [str(n) if n else str(i) for n, i in zip(names, indices)]


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
    flags.DEFINE_string("output", None, "The .npz file to write.", flag_values=fv)
    flags.DEFINE_string(
        "split", None, "A dataset split (instead of video files), e.g. validation.", flag_values=fv
    )
    flags.DEFINE_integer(
        "batch_size", None, "Videos per batch; default the config's test batch.", flag_values=fv
    )
    return fv


def main(argv: list[str] | None = None) -> int:
    """`python -m vivit_jax.extract_features [flags] video|directory ... | --split=NAME`."""
    from vivit_jax import predict

    argv = sys.argv if argv is None else argv
    fv = _define_flags(argv)
    usage = (
        "Usage: python -m vivit_jax.extract_features --checkpoint=... --output=FILE.npz "
        "[--config=...] (video|directory ... | --split=NAME)"
    )
    try:
        paths = fv(argv)[1:]
    except flags.Error as e:
        print(f"{e}\n{usage}")
        return 2
    if not fv.checkpoint or not fv.output or bool(paths) == bool(fv.split):
        print(usage)
        return 2
    if not fv.output.endswith(".npz"):
        print(f"--output={fv.output} must name a .npz file.\n{usage}")
        return 2
    failed = []
    if paths:
        paths, bad = predict.expand_inputs(paths)
        for path, reason in bad:
            print(f"{path}: failed: {reason}", flush=True)
        failed += bad
        if not paths:
            return 1
    backend = backends.for_platform()
    try:
        predictor = predict.Predictor(fv.checkpoint, fv.config, backend=backend)
    except Exception as e:  # noqa: BLE001 - any reason the model cannot be built is fatal.
        return predict.error_exit(
            f"cannot load --checkpoint={fv.checkpoint}: {predict.one_line(e)}"
        )
    mesh = sharding.create_mesh(1)
    extractor = FeatureExtractor(predictor, mesh, backend)
    if paths:
        ds = predictor.config.dataset_configs
        batch = fv.batch_size or ds.test_batch_size or predictor.config.eval_batch_size
        features, names, bad = video_features(
            extractor, paths, batch or predictor.config.batch_size
        )
        failed += bad
    else:
        features, names = split_features(extractor, fv.split, fv.batch_size)
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(fv.output)), exist_ok=True)
        np.savez(fv.output, features=features, names=np.asarray(names, dtype=str))
    print(
        f"Wrote {fv.output}: features {list(features.shape)} float32, {len(names)} names; "
        f"{len(failed)} input(s) failed{': ' + ', '.join(p for p, _ in failed) if failed else '.'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
