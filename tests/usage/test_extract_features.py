"""extract_features: per-video multi-view means of the model's pre-logits, from video files
and from a dataset split, identical on 1 and 8 devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.evaluation import predict_fixtures as pfx
from tests.usage import fixtures as fx
from vivit_jax import extract_features, predict, sharding
from vivit_jax.data import augment

# 2 clips x 3 crops = 6 views, 2 per forward pass.
PROTOCOL = {
    "dataset_configs.num_test_clips": 2,
    "dataset_configs.do_three_spatial_crops": True,
    "dataset_configs.min_resize": 20,
}


@pytest.fixture(scope="module")
def model2(tmp_path_factory):
    """Model 2 with pre_logits (representation_size 16): (config file, workdir, model, params)."""
    root = tmp_path_factory.mktemp("features")
    config_path = fx.write_config(root, "model2_token", **PROTOCOL)
    return (config_path, *fx.make_checkpoint(config_path, root))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return [pfx.video_file(root / f"v{i}.mp4", num_frames=12 + 5 * i, seed=i) for i in range(3)]


def _extractor(config_path, workdir, num_devices):
    predictor = predict.Predictor(workdir, fx.load(config_path))
    mesh = sharding.create_mesh(1, devices=jax.devices()[:num_devices])
    return extract_features.FeatureExtractor(predictor, mesh)


def _direct(model, params, config, path):
    """The mean over the test views of the pre-logits, computed straight from the model."""
    from vivit_jax.data.pipeline import video_test_views
    from vivit_jax.data.video_io import decode_video

    ds = config.dataset_configs
    views = video_test_views(decode_video(path, short_side=ds.min_resize).frames, ds)
    assert views.shape[0] == 6 and views.dtype == np.uint8
    views = augment.normalize(views, ds.zero_centering)
    prelogits = fx.apply_fn(model.clone(return_prelogits=True))(params, views)
    return np.asarray(prelogits).mean(0)


def test_video_features_are_the_mean_view_prelogits_on_1_and_8_devices(model2, videos):
    config_path, workdir, model, params = model2
    config = fx.load(config_path)
    want = np.stack([_direct(model, params, config, v) for v in videos])
    assert want.shape == (3, 16)
    for n in (1, 8):
        features, names, failed = extract_features.video_features(
            _extractor(config_path, workdir, n), videos, batch_size=2
        )
        assert names == videos and failed == []
        assert features.dtype == np.float32 and features.shape == (3, 16)
        np.testing.assert_allclose(features, want, atol=1e-5, rtol=1e-5)


def test_command_line_writes_features_and_names_and_reports_bad_inputs(
    model2, videos, tmp_path, capsys
):
    config_path, workdir, *_ = model2
    bad = pfx.random_bytes(tmp_path / "bad.mp4")
    out = tmp_path / "f.npz"
    argv = [
        "extract_features",
        f"--config={config_path}",
        f"--checkpoint={workdir}",
        f"--output={out}",
        "--batch_size=2",
        videos[0],
        bad,
        *videos[1:],
    ]
    assert extract_features.main(argv) == 1  # One input failed; the others are written.
    text = capsys.readouterr().out
    assert f"{bad}: failed: " in text and "features: 4/4 videos" in text
    with np.load(out) as f:
        assert f["features"].shape == (3, 16) and list(f["names"]) == videos


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory):
    """moving_shapes/tiny (12 test videos) built in a fresh data_dir; a Model 1 checkpoint."""
    from vivit_jax.data.build import build

    root = tmp_path_factory.mktemp("split")
    data_dir = str(root / "tfds")
    build("moving_shapes/tiny", data_dir, None, None, None, False)
    config_path = fx.write_config(
        root, "model1_token", **{"dataset_configs.data_dir": data_dir, **PROTOCOL}
    )
    return (config_path, *fx.make_checkpoint(config_path, root))


def test_split_features_on_1_and_8_devices_with_video_ids(tiny_split):
    config_path, workdir, model, params = tiny_split
    results = {}
    for n in (1, 8):
        extractor = _extractor(config_path, workdir, n)
        # 5 videos a batch: 3 batches on 1 device; 8 (rounded up) on 8 devices, 4 of padding.
        results[n] = extract_features.split_features(extractor, "test", batch_size=5)
    (f1, names1), (f8, names8) = results[1], results[8]
    assert names1 == names8 and sorted(names1) == [f"test_{i:06d}" for i in range(12)]
    assert f1.shape == (12, 64)
    np.testing.assert_allclose(f1, f8, atol=1e-5, rtol=1e-5)
    # The same numbers as the model on the pipeline's own views of those videos.
    from vivit_jax import experiment

    config = extractor.config.copy_and_resolve_references()
    config.unlock()
    config.dataset_configs.test_split = "test"
    batch = next(experiment.default_dataset_fn(config, mesh=None, start_step=0).test_iter())
    flat = np.asarray(batch["inputs"]).reshape((-1,) + batch["inputs"].shape[2:])
    flat = augment.normalize(flat, config.dataset_configs.zero_centering)
    prelogits = np.asarray(fx.apply_fn(model.clone(return_prelogits=True))(params, flat))
    want = prelogits.reshape(batch["inputs"].shape[:2] + (-1,)).mean(1)
    rows = np.asarray(batch["video_index"])[np.asarray(batch["batch_mask"]) > 0]
    np.testing.assert_allclose(f8[rows], want[: len(rows)], atol=1e-5, rtol=1e-5)
    # The names belong to the rows: moving_shapes' video test_i has label i % 8.
    labels = np.asarray(batch["label"])[: len(rows)]
    assert [int(names8[r][5:]) % 8 for r in rows] == list(labels)


def test_usage_errors(tmp_path, capsys):
    assert extract_features.main(["extract_features", "--checkpoint=x", "--output=o.npz"]) == 2
    argv = ["extract_features", "--checkpoint=x", "--output=o.txt", "--split=test"]
    assert extract_features.main(argv) == 2
    assert "must name a .npz file" in capsys.readouterr().out
