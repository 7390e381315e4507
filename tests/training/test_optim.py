"""Schedule and optimisers reproduce Scenic / flax.optim arithmetic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.training.conftest import tiny_config
from vivit_jax import config_lib, losses, optim


def _schedule(**lr):
    c = tiny_config()
    c.lr_configs.update(lr)
    c = config_lib.complete_config(c)
    return optim.learning_rate_fn(c.lr_configs, total_steps=1000)


def test_compound_warmup_cosine_matches_scenic_formula():
    s = _schedule(
        factors="constant * cosine_decay * linear_warmup",
        base_learning_rate=0.1,
        warmup_steps=100,
        steps_per_cycle=1000,
    )
    for step in (0, 50, 100, 550, 999, 1000):
        warm = min(1.0, step / 100)
        # Scenic: decay over (steps_per_cycle - warmup) steps, starting after the warmup.
        progress = max(0.0, step - 100) / 900
        cos = max(0.0, 0.5 * (1 + math.cos(math.pi * (progress % 1.0))))
        if step == 1000:
            cos = 1.0  # A new cycle starts (Scenic's cyclic cosine).
        np.testing.assert_allclose(float(s(step)), 0.1 * warm * cos, rtol=1e-5, atol=1e-7)


def test_steps_per_cycle_defaults_to_run_length():
    s = _schedule(factors="constant * cosine_decay", base_learning_rate=1.0, warmup_steps=0)
    np.testing.assert_allclose(float(s(500)), 0.5, atol=1e-6)
    np.testing.assert_allclose(float(s(999)), 0.0, atol=1e-4)


def test_other_factors():
    s = _schedule(
        factors="constant * piecewise_constant",
        base_learning_rate=1.0,
        decay_events=[10, 20],
        decay_factors=[0.5, 0.1],
    )
    assert [float(s(x)) for x in (5, 15, 25)] == pytest.approx([1.0, 0.5, 0.1])
    s = _schedule(factors="constant * linear_decay", base_learning_rate=1.0, warmup_steps=0)
    assert float(s(250)) == pytest.approx(0.75)


def _one_update(name, **oc):
    c = tiny_config(optimizer=name, max_grad_norm=None)
    c.optimizer_configs.update(oc)
    c = config_lib.complete_config(c)
    tx = optim.create_optimizer(c, lambda step: 0.1)
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.5])}
    state = tx.init(p)
    u1, state = tx.update(g, state, p)
    p1 = optax.apply_updates(p, u1)
    u2, state = tx.update(g, state, p1)
    return p, g, p1, optax.apply_updates(p1, u2)


def test_momentum_matches_flax_optim():
    p, g, p1, p2 = _one_update("momentum", momentum=0.9, weight_decay=0.01)
    w, gw = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    m = gw + 0.01 * w  # flax.optim.Momentum: coupled weight decay, then trace.
    w1 = w - 0.1 * m
    m = 0.9 * m + gw + 0.01 * w1
    np.testing.assert_allclose(p1["w"], w1, rtol=1e-6)
    np.testing.assert_allclose(p2["w"], w1 - 0.1 * m, rtol=1e-6)


def test_adamw_decoupled_weight_decay():
    p, g, p1, _ = _one_update("adam", weight_decay=0.1)
    # First Adam step moves by lr * sign(g); decay adds lr * wd * w.
    np.testing.assert_allclose(p1["w"], [1.0 - 0.1 - 0.01, -2.0 - 0.1 + 0.02], rtol=1e-4)


def test_clipping_uses_global_norm():
    c = config_lib.complete_config(tiny_config(optimizer="sgd", max_grad_norm=1.0))
    tx = optim.create_optimizer(c, lambda step: 1.0)
    g = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    u, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose([u["a"][0], u["b"][0]], [-0.6, -0.8], rtol=1e-6)


def test_label_smoothing_and_mixup():
    t = losses.smooth_labels(jax.nn.one_hot(jnp.array([1]), 4), 0.2)
    np.testing.assert_allclose(t, [[0.05, 0.85, 0.05, 0.05]], rtol=1e-6)
    x = jnp.arange(4.0).reshape(4, 1)
    y = jax.nn.one_hot(jnp.arange(4), 4)
    mx, my = losses.mixup(x, y, jax.random.key(0), 0.3)
    lam = float(my[0, 0])
    np.testing.assert_allclose(mx[:, 0], lam * x[:, 0] + (1 - lam) * x[::-1, 0], rtol=1e-5)
    np.testing.assert_allclose(my.sum(-1), 1.0, rtol=1e-6)
