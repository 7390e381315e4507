"""Training and evaluating on the datasets people fine-tune on: EPIC-Kitchens-100 and Moments in
Time from their TFDS builds (the configs with only `data_dir` set), a multi-label `video_folder`
with sigmoid cross-entropy and mAP, and mAP itself against a direct computation."""

import json
import os

import numpy as np
import pytest

from tests.data.test_build_epic_kitchens import epic  # noqa: F401  (the fixture)
from tests.data.test_build_moments_in_time import mit  # noqa: F401  (the fixture)
from tests.data.video_fixtures import write_clip
from tests.evaluation.conftest import load_config
from vivit_jax import config_lib, eval_results, train
from vivit_jax.data import build as build_lib


def _results(workdir):
    with open(os.path.join(workdir, "eval", "validation_results.json")) as f:
        return json.load(f)


def test_epic_kitchens_config_trains_on_the_tfds_build(epic, tmp_path):  # noqa: F811
    _, data_dir = epic
    config = load_config("configs/epic_kitchens/vivit_large_factorised_encoder.py", "tiny")
    config.dataset_configs.data_dir = data_dir
    config.dataset_name = "epic_kitchens_100/short32"
    # The fixture's classes: 3 nouns, 4 verbs (the real ones: 300, 97).
    config.dataset_configs.class_splits = [3, 4]
    config.dataset_configs.min_resize = config.dataset_configs.crop_size = 32
    config.model.patches.size = (16, 16, 2)
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result.step == 2 and np.isfinite(result.train_history[-1][1]["train/loss"])
    r = _results(str(tmp_path))
    assert set(r["heads"]) == {"noun", "verb"} and r["num_videos"] == 1
    assert list(r["heads"]["noun"]["per_class_top1"]) == ["tap", "plate", "cupboard"]
    assert list(r["heads"]["verb"]["per_class_top1"]) == ["take", "put", "wash", "open"]


def test_moments_in_time_config_trains_on_the_tfds_build(mit, tmp_path):  # noqa: F811
    config = load_config("configs/moments_in_time/vivit_large_factorised_encoder.py", "tiny")
    config.dataset_configs.data_dir = os.path.dirname(
        os.path.dirname(os.path.dirname(mit.data_dir))
    )
    config.dataset_name = "moments_in_time/short32"
    config.dataset_configs.min_resize = config.dataset_configs.crop_size = 32
    config.model.patches.size = (16, 16, 2)
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result.step == 2
    r = _results(str(tmp_path))
    assert r["num_videos"] == 2
    assert "cutting, chopping" in r["per_class_top1"]


@pytest.fixture(scope="module")
def multilabel_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    names = ["running", "jumping", "sitting"]
    rows = {"train": [], "val": []}
    for i in range(12):
        split = "train" if i < 8 else "val"
        path = f"clips/{i}.mp4"
        write_clip(root / path, 8, seed=i)
        chosen = [n for k, n in enumerate(names) if (i >> k) & 1] or ["sitting"]
        rows[split].append(f"{path},{';'.join(chosen)}\n")
    (root / "annotations").mkdir()
    for split, lines in rows.items():
        (root / "annotations" / f"{split}.csv").write_text("path,labels\n" + "".join(lines))
    data_dir = tmp_path_factory.mktemp("tfds")
    build_lib.build("video_folder/multilabel_short32", data_dir=str(data_dir), manual_dir=str(root))
    return str(data_dir)


def test_multilabel_video_folder_trains_with_sigmoid_and_reports_map(multilabel_folder, tmp_path):
    from tests.training.test_demo import demo_config

    config = demo_config("tiny")
    config.dataset_name = "video_folder/multilabel_short32"
    config.model_name = "vivit_multilabel_classification"
    ds = config.dataset_configs
    ds.data_dir, ds.test_split = multilabel_folder, "validation"
    ds.min_resize = ds.crop_size = 32
    config.model.patches.size = (16, 16, 2)
    config = config_lib.complete_config(config)
    assert config.dataset_configs.multi_label is False  # Not derived: multi-label is set so.
    config.unlock()
    config.dataset_configs.multi_label = True
    result = train.train_and_evaluate(config, str(tmp_path))
    assert result.step == 6
    r = _results(str(tmp_path))
    assert r["model_name"] == "vivit_multilabel_classification" and r["num_videos"] == 4
    assert 0.0 <= r["mAP"] <= 1.0
    assert set(r["per_class_ap"]) == {"jumping", "running", "sitting"}
    assert "mAP" in eval_results.summary_line(r)


def _direct_ap(scores, targets):
    """Average precision of one class by definition: the mean, over its positives, of the
    precision among the videos ranked at or above each positive."""
    order = np.argsort(-scores, kind="stable")
    ranked = targets[order]
    precisions = [ranked[: k + 1].mean() for k in range(len(ranked)) if ranked[k]]
    return np.mean(precisions) if precisions else np.nan


def test_map_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 5))
    targets = (rng.uniform(size=(40, 5)) < 0.3).astype(np.float64)
    targets[:, 4] = 0  # a class without positives: no AP
    ap = eval_results.average_precision(scores, targets)
    want = [_direct_ap(scores[:, c], targets[:, c]) for c in range(5)]
    np.testing.assert_allclose(ap[:4], want[:4], rtol=1e-12)
    assert np.isnan(ap[4])
    perfect = eval_results.average_precision(targets[:, :4] * 2.0, targets[:, :4])
    np.testing.assert_allclose(perfect, 1.0)
