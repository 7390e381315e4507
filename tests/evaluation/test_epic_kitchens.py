"""EPIC-Kitchens: the multi-head loss and noun / verb / action accuracy, and the config end to end
on tiny DMVR records holding [noun, 300 + verb]."""

import json
import os

import jax
import numpy as np
import pytest

from tests.evaluation.conftest import load_config
from vivit_jax import config_lib, losses, train
from vivit_jax.metrics import top_k_correct

EK = "configs/epic_kitchens/vivit_large_factorised_encoder.py"


def test_action_is_right_iff_noun_and_verb_are():
    splits = (3, 2)  # 3 nouns, 2 verbs
    logits = np.array(
        [
            [5.0, 0, 0, 4, 0],  # noun 0, verb 0
            [5.0, 0, 0, 0, 4],  # noun 0, verb 1
            [0.0, 5, 0, 4, 0],  # noun 1, verb 0
        ]
    )
    labels = np.zeros((3, 5), np.float32)
    for row, (noun, verb) in enumerate([(0, 0), (0, 0), (0, 0)]):
        labels[row, noun] = labels[row, 3 + verb] = 1
    np.testing.assert_array_equal(top_k_correct(logits, labels, 1, splits), [1, 0, 0])
    noun, verb = losses.split_heads(logits, splits)
    ln, lv = losses.split_heads(labels, splits)
    np.testing.assert_array_equal(top_k_correct(noun, ln, 1), [1, 1, 0])
    np.testing.assert_array_equal(top_k_correct(verb, lv, 1), [1, 0, 1])
    # Top-5 of 6 noun-verb pairs ranked by the product of the heads' probabilities.
    np.testing.assert_array_equal(top_k_correct(logits, labels, 5, splits), [1, 1, 1])


def test_loss_is_the_mean_of_the_heads_cross_entropies():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 7)).astype(np.float32)
    labels = np.zeros((4, 7), np.float32)
    labels[np.arange(4), [0, 1, 2, 3]] = 1
    labels[np.arange(4), [4, 5, 6, 4]] = 1

    def ce(lg, t):
        return -np.sum(t * (lg - np.log(np.sum(np.exp(lg), -1, keepdims=True))), -1)

    want = (ce(logits[:, :4], labels[:, :4]) + ce(logits[:, 4:], labels[:, 4:])) / 2
    got = losses.per_example_loss(logits, labels, False, (4, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Label smoothing spreads 0.2 over each head's own classes.
    smooth = np.asarray(losses.smooth_labels(labels, 0.2, (4, 3)))
    np.testing.assert_allclose(smooth[:, :4].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(smooth[0, 1], 0.05) and np.testing.assert_allclose(
        smooth[0, 5], 0.2 / 3
    )


def test_config_parses_and_builds_the_397_way_model():
    config = config_lib.complete_config(load_config(EK))
    assert config.model_name == "vivit_multihead_classification"
    assert list(config.dataset_configs.class_splits) == [300, 97]
    from vivit_jax.models import create_model

    ds = config.dataset_configs
    model = create_model(config.model, 397)
    shapes = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), np.zeros((1, ds.num_frames, 224, 224, 3), np.float32), train=False
        )
    )["params"]
    assert shapes["output_projection"]["kernel"].shape == (1024, 397)


def test_multihead_needs_class_splits_and_multi_hot_labels():
    config = load_config(EK)
    config.dataset_configs.multi_label = False
    with pytest.raises(ValueError, match="multi_label=True"):
        config_lib.complete_config(config)


def _frames(rng, n=8, h=24, w=32):
    from vivit_jax.data.video_io import encode_jpeg

    return [encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def ek_records(tmp_path_factory):
    """train: 8 and validation: 6 segments, labels [noun, 300 + verb]."""
    from vivit_jax.data.dmvr import write_records

    base = tmp_path_factory.mktemp("ek")
    rng = np.random.default_rng(0)
    labels = {}
    for split, n in (("train", 8), ("validation", 6)):
        items = [(int(rng.integers(300)), int(rng.integers(97))) for _ in range(n)]
        labels[split] = items
        write_records(
            str(base / f"{split}.tfrecord"),
            [{"frames": _frames(rng), "label": [noun, 300 + verb]} for noun, verb in items],
        )
    return str(base), labels


def _tiny(base):
    config = load_config(EK, "tiny,dmvr")
    config.dataset_configs.base_dir = base
    return config


def test_tiny_run_trains_and_writes_noun_verb_action_results(
    ek_records, tmp_path, capsys, monkeypatch
):
    base, labels = ek_records
    result = train.train_and_evaluate(_tiny(base), str(tmp_path))
    assert np.isfinite(result.train_history[-1][1]["train/loss"])
    r = result.test_results
    assert r["num_videos"] == 6 and r["num_views"] == 6  # 2 clips × 3 crops
    assert set(r["heads"]) == {"noun", "verb"}
    assert len(r["heads"]["noun"]["per_class_top1"]) == 300
    assert len(r["heads"]["verb"]["per_class_top1"]) == 97
    nouns = r["heads"]["noun"]["per_class_num_videos"]
    assert sum(nouns.values()) == 6
    for noun, _ in labels["validation"]:
        assert nouns[str(noun)] >= 1
    assert r["top1"] <= min(r["heads"]["noun"]["top1"], r["heads"]["verb"]["top1"])
    eval_dir = tmp_path / "eval"
    assert {"validation_confusion_noun.png", "validation_confusion_verb.png"} <= set(
        os.listdir(eval_dir)
    )

    # The same evaluation from the command line, on the saved checkpoint.
    from absl import flags

    from vivit_jax import main as main_lib

    argv = [
        "main",
        "--mode=evaluate",
        f"--config={os.path.join(os.path.dirname(__file__), '..', '..', EK)}:tiny,dmvr",
        f"--config.dataset_configs.base_dir={base}",
        f"--workdir={tmp_path}",
    ]
    monkeypatch.setattr("sys.argv", argv)  # ml_collections finds `--config.*` overrides there.
    flags.FLAGS.unparse_flags()
    try:
        main_lib.main(flags.FLAGS(argv))
    finally:
        flags.FLAGS.unparse_flags()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("validation: action top-1") and "6 videos × 6 views" in line
    with open(eval_dir / "validation_results.json") as f:
        saved = json.load(f)
    assert saved["step"] == 2 and saved["top1"] == pytest.approx(r["top1"])


def test_single_video_views_are_the_pipelines(ek_records):
    """`video_test_views` (what predict uses) cuts the views `test_iter` cuts."""
    from vivit_jax.data import get_dataset
    from vivit_jax.data.dmvr import DmvrSource
    from vivit_jax.data.pipeline import video_test_views

    base, _ = ek_records
    config = config_lib.complete_config(_tiny(base))
    batch = next(get_dataset(config).test_iter())
    source = DmvrSource([os.path.join(base, "validation.tfrecord")])
    for row in range(2):
        frames = source.get(int(batch["video_index"][row]))[0]
        views = video_test_views(frames, config.dataset_configs)
        np.testing.assert_array_equal(views, batch["inputs"][row])
