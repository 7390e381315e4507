"""The jitted train/eval steps: every variant learns, and the result does not depend on the
number of devices, the FSDP split or gradient accumulation."""

import jax
import numpy as np
import pytest

from tests.training.conftest import make_dataset, tiny_config
from vivit_jax import config_lib, experiment, sharding, train

VARIANTS = {
    "spacetime": {},
    "factorized_encoder": {"model.classifier": "token"},
    "factorized_self_attention_block": {},
    "factorized_dot_product_attention": {},
}


def _setup(config, devices, model_axis_size=1):
    config = config_lib.complete_config(config)
    mesh = sharding.create_mesh(model_axis_size, devices=devices)
    dataset = make_dataset(config, mesh=mesh)
    exp = experiment.build_experiment(config, mesh=mesh, dataset=dataset)
    train_fn, eval_fn = train.compile_steps(exp)
    return exp, experiment.initial_state(exp), train_fn, eval_fn


def _losses(exp, state, train_fn, batches):
    out = []
    for batch in batches:
        state, m = train_fn(state, batch, exp.train_rng)
        out.append(float(m.compute()["loss"]))
    return out, state


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_fits_a_fixed_batch(variant):
    overrides = {"model.attention_config.type": variant, **VARIANTS[variant]}
    config = tiny_config(
        **overrides, **{"lr_configs.factors": "constant", "lr_configs.base_learning_rate": 1e-2}
    )
    exp, state, train_fn, _ = _setup(config, jax.devices()[:1])
    batch = next(exp.dataset.train_iter)
    losses, state = _losses(exp, state, train_fn, [batch] * 10)
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses


def _batches(config, n, mesh):
    it = make_dataset(config_lib.complete_config(config), mesh=mesh).train_iter
    return [next(it) for _ in range(n)]


EQUIVALENCE = {"mixup.alpha": 0.3, "label_smoothing": 0.1}


@pytest.fixture(scope="module")
def one_device_run():
    """Losses and parameters after 3 steps on one device (the reference)."""
    config = tiny_config(**EQUIVALENCE)
    exp, state, train_fn, _ = _setup(config, jax.devices()[:1])
    return _losses(exp, state, train_fn, _batches(config, 3, exp.mesh))


@pytest.mark.parametrize(
    "devices, model_axis_size, overrides",
    [
        (8, 1, {}),  # Data parallel over 8 devices.
        (8, 2, {"sharding.fsdp_min_size": 64}),  # 4 x 2 mesh, parameters split over 'model'.
        (1, 1, {"grad_accum_steps": 4}),  # 4 micro-batches of 2.
    ],
)
def test_same_losses_as_one_device(one_device_run, devices, model_axis_size, overrides):
    ref, state1 = one_device_run
    config = tiny_config(**EQUIVALENCE, **overrides)
    exp, state, train_fn, _ = _setup(config, jax.devices()[:devices], model_axis_size)
    if model_axis_size > 1:
        specs = [s.spec for s in jax.tree.leaves(exp.state_shardings.params)]
        assert any("model" in tuple(s) for s in specs)
    got, state = _losses(exp, state, train_fn, _batches(config, 3, exp.mesh))
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state1.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
