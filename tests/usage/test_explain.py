"""explain: rollout maps have one weight per tubelet summing to 1, follow attention forced onto
one token, keep the model's logits and parameters, and predict --explain writes mp4 and png."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.evaluation import predict_fixtures as pfx
from tests.usage import fixtures as fx
from vivit_jax import explain, predict
from vivit_jax.checkpoints import trees

GRID = (4, 2, 2)  # demo:tiny: 8 frames of 16x16 in 8x8x2 tubelets.
VARIANTS = ["model1_token", "model1_gap", "model2_token", "model3_gap", "model4_gap"]
# Tubelet (t, h, w) = (2, 1, 0): flat index 2 * 4 + 1 * 2 + 0.
TARGET = (2, 1, 0)


def _model_and_params(tmp_path, name):
    from vivit_jax.models import create_model

    config = fx.load(fx.write_config(tmp_path, name))
    model = create_model(config.model, fx.NUM_CLASSES)
    x = np.zeros((1, 8, 16, 16, 3), np.float32)
    params = jax.device_get(jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1)))
    return config, params["params"]


def _maps(config, params, x):
    model = explain.explained_model(config, fx.NUM_CLASSES)
    logits, sown = jax.jit(lambda p, v: explain.attention_weights(model, p, v))(params, x)
    return model, logits, np.asarray(explain.tubelet_map(model, sown, GRID))


@pytest.mark.parametrize("name", VARIANTS)
def test_maps_have_one_weight_per_tubelet_and_sum_to_1(tmp_path, name):
    config, params = _model_and_params(tmp_path, name)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 16, 16, 3)).astype(np.float32)
    model, logits, tubelets = _maps(config, params, x)
    assert tubelets.shape == GRID and (tubelets >= 0).all()
    np.testing.assert_allclose(tubelets.sum(), 1.0, rtol=1e-5)
    # Sowing changes neither the logits nor the parameters' tree.
    from vivit_jax.models import create_model

    plain = create_model(config.model, fx.NUM_CLASSES)
    np.testing.assert_allclose(
        logits, plain.apply({"params": params}, x, train=False), rtol=1e-5, atol=1e-5
    )
    abstract = jax.eval_shape(lambda: plain.init(jax.random.key(0), x, train=False))["params"]
    assert trees.flatten(abstract).keys() == trees.flatten(params).keys()
    maps, weights = explain.pixel_maps(model, tubelets, (8, 16, 16, 3))
    assert maps.shape == (8, 16, 16) and weights.shape == (8,)
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
    # Each pixel shows its tubelet's weight: frames 2t, 2t+1 and an 8x8 block per tubelet.
    np.testing.assert_array_equal(maps[5, 8:, :8], np.full((8, 8), tubelets[2, 1, 0]))


def _force(params, name):
    """Parameters whose every attention attends (almost) only to the TARGET tubelet's token.

    All tokens are zero except a marker on the target's position embedding, and no block
    writes to the residual stream (output projections and MLP outputs are zero): after each
    LayerNorm only the marked token is non-zero, its key is large along the queries' constant
    direction, so every query's softmax puts ~all weight on it.
    """
    t, h, w = TARGET
    params = jax.tree.map(np.array, params)

    def visit(node, path):
        if {"query", "key", "value", "out"} <= set(node):
            node["query"]["kernel"][:] = 0
            node["query"]["bias"][:] = 1.0
            node["key"]["kernel"][:] = 0
            node["key"]["kernel"][0] = 1.0
            node["key"]["bias"][:] = 0
            node["out"]["kernel"][:] = 0
            node["out"]["bias"][:] = 0
        for key, child in node.items():
            if key.startswith("MlpBlock"):
                child["Dense_1"]["kernel"][:] = 0
                child["Dense_1"]["bias"][:] = 0
            elif key == "posembed_input":
                pe = child["pos_embedding"]
                pe[:] = 0
                token = {
                    "model1_token": 1 + t * 4 + h * 2 + w,
                    "model2_token": 1 + (t if path == "TemporalTransformer" else h * 2 + w),
                }.get(name, t * 4 + h * 2 + w)
                pe[0, token, :2] = (1.0, -1.0)
            elif isinstance(child, dict):
                visit(child, key)

    visit(params, "")
    params["embedding"]["kernel"][:] = 0
    params["embedding"]["bias"][:] = 0
    for key in params:
        if key.startswith("cls"):
            params[key][:] = 0
    return params


@pytest.mark.parametrize("name", VARIANTS)
def test_attention_forced_onto_one_token_puts_the_heat_there(tmp_path, name):
    config, params = _model_and_params(tmp_path, name)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 8, 16, 16, 3)).astype(np.float32)
    _, _, tubelets = _maps(config, _force(params, name), x)
    assert np.unravel_index(np.argmax(tubelets), GRID) == TARGET
    if name in ("model1_token", "model2_token"):  # The class tokens attend to it alone.
        assert tubelets[TARGET] > 0.99
    elif name == "model1_gap":  # The mean readout keeps 0.5 * 0.5 on itself (residuals).
        np.testing.assert_allclose(tubelets[TARGET], 0.75 + 0.25 / 16, rtol=1e-3)
    else:  # Factorised: the other rows and columns of the grid attend uniformly.
        assert tubelets[TARGET] > 2 * np.sort(tubelets.ravel())[-2]


def test_predict_explain_writes_a_decodable_mp4_and_png(tmp_path, capsys):
    from PIL import Image

    from vivit_jax.data.video_io import decode_video

    workdir = pfx.demo_checkpoint(tmp_path)[0]
    videos = [pfx.video_file(tmp_path / "clip.mp4"), pfx.video_file(tmp_path / "other.webm")]
    out = tmp_path / "attention"
    argv = ["predict", f"--config={pfx.DEMO_CONFIG}", f"--checkpoint={workdir}", f"--explain={out}"]
    assert predict.main(argv + videos) == 0
    text = capsys.readouterr().out
    for stem in ("clip", "other"):
        mp4, png = out / f"{stem}.attention.mp4", out / f"{stem}.attention.png"
        assert f"attention: {mp4}, {png}" in text
        decoded = decode_video(str(mp4))
        assert len(decoded.frames) == 8  # One per frame of the view.
        with Image.open(png) as image:
            image.load()
            assert image.mode == "RGB" and image.size[0] > image.size[1] > 0


def test_weights_sink_sees_the_softmax_and_changes_nothing():
    from vivit_jax.models import attention

    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 5, 3, 4)).astype(np.float32) for _ in range(3))
    plain = attention.einsum_attention(q, k, v)
    seen = []
    with attention.weights_sink(seen.append):
        sunk = attention.einsum_attention(q, k, v)
    assert attention.einsum_attention(q, k, v) is not None and len(seen) == 1  # Sink gone.
    np.testing.assert_array_equal(sunk, plain)
    assert seen[0].shape == (2, 3, 5, 5)
    np.testing.assert_allclose(np.asarray(seen[0]).sum(-1), 1.0, rtol=1e-6)
