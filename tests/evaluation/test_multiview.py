"""The multi-view protocol: averaging, exact counts on 1 and 8 devices, checkpoints, results."""

import json
import os

import flax
import jax
import numpy as np
import pytest

from tests.evaluation.conftest import experiment, multiview_dataset_fn, tiny_config
from vivit_jax import eval_results, evaluate
from vivit_jax.checkpoints import CheckpointError, save_params_orbax


def test_average_views_means_logits_or_probabilities():
    logits = np.array([[[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])  # one video, two views
    np.testing.assert_allclose(evaluate.average_views(logits, False), [[0.5, 1.5, 0.0]])
    soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(evaluate.average_views(logits, True), soft.mean(1), rtol=1e-6)
    # Multi-head: a softmax per head.
    heads = evaluate.average_views(logits, True, class_splits=(2, 1))
    np.testing.assert_allclose(heads[0, 2], 1.0, rtol=1e-6)
    np.testing.assert_allclose(heads[0, :2].sum(), 1.0, rtol=1e-6)


def test_views_per_chunk():
    assert evaluate.views_per_chunk(12, 2) == 2
    assert evaluate.views_per_chunk(3, 2) == 1
    assert evaluate.views_per_chunk(12, 5) == 4
    assert evaluate.views_per_chunk(1, 8) == 1


def test_round_test_batch_copies_the_config():
    """3 videos per batch on 8 devices → 8, in a copy: the caller's config keeps its 3."""
    from vivit_jax import sharding

    config = tiny_config()
    config.dataset_configs.test_batch_size = 3
    mesh = sharding.create_mesh()
    assert mesh.devices.size == 8
    rounded = evaluate.round_test_batch(config, mesh)
    assert rounded.dataset_configs.test_batch_size == 8
    assert config.dataset_configs.test_batch_size == 3
    assert evaluate.round_test_batch(rounded, mesh) is rounded


def _expected(exp, params, num_test, views):
    """Per-video scores by hand: the model on every view separately, logits averaged."""
    scores, labels = [], []
    from tests.evaluation.conftest import video

    for i in range(num_test):
        x, y = video(exp.config.rng_seed, i, views)
        logits = exp.model.apply({"params": params}, x, train=False)
        scores.append(np.mean(np.asarray(logits), 0))
        labels.append(y)
    return np.stack(scores), np.array(labels)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_every_video_once_and_scores_are_view_averages(random_params, num_devices):
    num_test, views = 13, 3  # 2 batches of 8, 3 padding rows
    dataset_fn = multiview_dataset_fn(num_test, views)
    exp = experiment(tiny_config(multicrop_clips_per_device=2), num_devices, dataset_fn)
    params = jax.device_put(random_params, exp.state_shardings.params)
    step = evaluate.compile_multiview_step(exp)
    batch = next(exp.dataset.test_iter())
    want_scores, want_labels = _expected(exp, random_params, num_test, views)
    got = jax.device_get(step(params, batch))
    np.testing.assert_allclose(got["scores"], want_scores[:8], rtol=1e-5, atol=1e-5)

    results = evaluate.evaluate_views(exp, params, checkpoint="random")
    assert results["num_videos"] == num_test and results["num_views"] == views
    assert results["num_devices"] == num_devices
    assert results["top1"] == pytest.approx(np.mean(want_scores.argmax(-1) == want_labels))
    counts = results["per_class_num_videos"]
    assert sum(counts.values()) == num_test
    assert list(counts.values()) == np.bincount(want_labels, minlength=4).tolist()
    confusion = results["_confusion"][None]
    assert confusion.sum() == num_test and np.trace(confusion) == round(results["top1"] * 13)


def test_a_video_counted_twice_is_an_error(random_params):
    exp = experiment(tiny_config(), 8, multiview_dataset_fn(13, 2, repeat_video=0))
    params = jax.device_put(random_params, exp.state_shardings.params)
    with pytest.raises(RuntimeError, match="counted twice"):
        evaluate.evaluate_views(exp, params, checkpoint="random")


def _orbax_workdir(tmp_path, params, step=5):
    save_params_orbax(tmp_path / "work" / "checkpoints", params, step)
    return str(tmp_path / "work")


def test_evaluate_latest_checkpoint_writes_results(random_params, tmp_path):
    workdir = _orbax_workdir(tmp_path, random_params)
    # A test batch of 6 on 8 devices: rounded up to 8, still every video once.
    config = tiny_config(**{"dataset_configs.test_batch_size": 6, "multicrop_softmax_logits": True})
    results = evaluate.evaluate(config, workdir, dataset_fn=multiview_dataset_fn(13, 2))
    assert results["num_videos"] == 13 and results["test_batch_size"] == 8
    assert results["step"] == 5 and results["checkpoint"].endswith(os.path.join("checkpoints", "5"))
    assert results["averaging"] == "softmax"
    path = os.path.join(workdir, "eval", "test_results.json")
    assert results["results_file"] == path
    with open(path) as f:
        saved = json.load(f)
    for key in (
        "top1",
        "top5",
        "num_videos",
        "num_views",
        "checkpoint",
        "config",
        "split",
        "per_class_top1",
        "elapsed_seconds",
        "num_test_clips",
        "spatial_crops",
    ):
        assert key in saved, key
    assert set(saved["per_class_top1"]) == {"right", "left", "down", "up"}
    from PIL import Image

    image = Image.open(os.path.join(workdir, "eval", saved["confusion_matrix"]["all"]["image"]))
    assert image.size[0] > 4 * 16
    counts = np.load(os.path.join(workdir, "eval", saved["confusion_matrix"]["all"]["counts"]))
    assert counts.sum() == 13
    line = eval_results.summary_line(results)
    assert "top-1" in line and "13 videos × 2 views" in line


def test_scenic_and_huggingface_checkpoints(random_params, tmp_path):
    dataset_fn = multiview_dataset_fn(5, 1)
    ref = evaluate.evaluate(
        tiny_config(), _orbax_workdir(tmp_path, random_params), dataset_fn=dataset_fn
    )
    scenic = tmp_path / "scenic" / "checkpoint_7"
    scenic.parent.mkdir()
    scenic.write_bytes(
        flax.serialization.msgpack_serialize({"optimizer": {"target": random_params}})
    )
    got = evaluate.evaluate(
        tiny_config(), str(tmp_path / "w2"), checkpoint=str(scenic), dataset_fn=dataset_fn
    )
    assert got["step"] == 7 and got["checkpoint"] == str(scenic)
    assert got["top1"] == ref["top1"] and got["loss"] == pytest.approx(ref["loss"])

    # A HuggingFace ViViT (Model 1, CLS token) replaces the config's architecture.
    from vivit_jax.checkpoints import export_huggingface_vivit
    from vivit_jax.models import create_model

    hf_config = tiny_config(**{"model.classifier": "token", "model.hidden_size": 16}).model
    model = create_model(hf_config, 4)
    params = jax.device_get(
        model.init(jax.random.key(1), np.zeros((1, 4, 16, 16, 3)), train=False)["params"]
    )
    hf_dir = export_huggingface_vivit(
        params,
        hf_config,
        tmp_path / "hf",
        num_frames=4,
        image_size=16,
        id2label={0: "r", 1: "l", 2: "d", 3: "u"},
    )
    got = evaluate.evaluate(
        tiny_config(), str(tmp_path / "w3"), checkpoint=hf_dir, dataset_fn=dataset_fn
    )
    assert got["checkpoint"] == hf_dir and got["num_videos"] == 5


def test_checkpoint_errors(random_params, tmp_path):
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        evaluate.evaluate(tiny_config(), str(tmp_path), dataset_fn=multiview_dataset_fn())
    workdir = _orbax_workdir(tmp_path, random_params)
    with pytest.raises(CheckpointError, match=r"hidden_size.*32"):
        evaluate.evaluate(
            tiny_config(**{"model.hidden_size": 64}), workdir, dataset_fn=multiview_dataset_fn()
        )
