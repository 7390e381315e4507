"""`layers.linear` / `layers.Dense`: Flax's Dense and DenseGeneral, with the CPU's bias gradient
taken from the kernel-gradient matmul (a ones column) instead of a reduction."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import TINY_INPUT, randomize, tiny_config
from tests.models.test_numerics import _count_primitive
from vivit_jax.models import create_model, layers

# (input shape, kernel shape, bias shape): a 2-D matmul, leading batch axes into (heads,
# head_dim) as the q/k/v projections, (heads, head_dim) into features as `out`; input widths
# whose ones column needs no zero padding (15) and the most (16).
CASES = [
    ((7, 15), (15, 4), (4,)),
    ((2, 5, 16), (16, 3, 4), (3, 4)),
    ((2, 3, 5, 3, 4), (3, 4, 9), (9,)),
]


def _grads(fn, x, kernel, bias):
    def loss(*args):
        out = fn(*args).astype(jnp.float32)
        return jnp.sum(jnp.sin(out) * jnp.arange(out.size).reshape(out.shape))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, kernel, bias)


def _reference(x, kernel, bias):
    n_in = kernel.ndim - bias.ndim
    dims = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x, kernel, (dims, ((), ()))) + bias


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("shapes", CASES)
def test_linear_values_and_gradients_are_dense_generals(shapes, dtype, tol):
    keys = jax.random.split(jax.random.key(0), 3)
    x, kernel, bias = (jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes))
    assert layers.bias_gradient_in_matmul()  # the CPU path is the one under test
    out = layers.linear(x, kernel, bias)
    assert out.shape == x.shape[: x.ndim - (kernel.ndim - bias.ndim)] + bias.shape
    assert out.dtype == dtype
    np.testing.assert_allclose(
        *(np.float32(o) for o in (out, _reference(x, kernel, bias))), rtol=tol, atol=tol
    )
    for got, want in zip(
        _grads(layers.linear, x, kernel, bias), _grads(_reference, x, kernel, bias)
    ):
        assert got.shape == want.shape and got.dtype == want.dtype
        scale = float(jnp.abs(want.astype(jnp.float32)).max())
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol * scale)


def test_cpu_bias_gradient_is_no_reduction(monkeypatch):
    # The point of the CPU path: no reduce_sum in the backward pass (XLA:CPU makes each a tree
    # of reduce-windows); the bias gradient is a row of the kernel gradient's matmul.
    x, kernel, bias = jnp.ones((2, 9, 16)), jnp.ones((16, 3, 4)), jnp.ones((3, 4))

    def reductions():
        _, vjp = jax.vjp(layers.linear, x, kernel, bias)
        return _count_primitive(jax.make_jaxpr(vjp)(jnp.ones((2, 9, 3, 4))).jaxpr, "reduce_sum")

    assert reductions() == 0
    monkeypatch.setattr(layers, "BIAS_GRADIENT_IN_MATMUL", False)
    assert reductions() >= 1


@pytest.mark.parametrize(
    "ours,flax_module,shape",
    [
        (dict(features=6), nn.Dense(6, bias_init=nn.initializers.normal(1.0)), (2, 5, 4)),
        (
            dict(features=(3, 2)),
            nn.DenseGeneral((3, 2), kernel_init=nn.initializers.xavier_uniform()),
            (2, 5, 4),
        ),
        (
            dict(features=4, axis=(-2, -1)),
            nn.DenseGeneral(4, axis=(-2, -1), kernel_init=nn.initializers.xavier_uniform()),
            (2, 5, 3, 2),
        ),
    ],
)
def test_dense_has_flax_parameters_and_outputs(ours, flax_module, shape):
    # Same names, shapes and initial values (checkpoints and seeds unchanged), same outputs.
    dense = layers.Dense(
        **ours, kernel_init=flax_module.kernel_init, bias_init=flax_module.bias_init
    )
    x = jax.random.normal(jax.random.key(3), shape)
    ours_params = dense.init(jax.random.key(4), x)
    flax_params = flax_module.init(jax.random.key(4), x)
    assert jax.tree.structure(ours_params) == jax.tree.structure(flax_params)
    for a, b in zip(jax.tree.leaves(ours_params), jax.tree.leaves(flax_params)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        dense.apply(ours_params, x), flax_module.apply(flax_params, x), rtol=1e-6, atol=1e-6
    )


def test_dense_and_linear_reject_inputs_that_do_not_fit():
    with pytest.raises(ValueError, match=r"does not end with the kernel's input shape \(4,\)"):
        layers.linear(jnp.ones((2, 5)), jnp.ones((4, 3)), jnp.ones((3,)))
    with pytest.raises(ValueError, match="trailing axes only, got axis=0"):
        layers.Dense(3, axis=0).init(jax.random.key(0), jnp.ones((2, 5)))


@pytest.mark.parametrize(
    "kind,classifier",
    [
        ("spacetime", "token"),
        ("factorized_encoder", "token"),
        ("factorized_self_attention_block", "gap"),
    ],
)
def test_model_gradients_same_with_and_without_the_cpu_bias_gradient(kind, classifier, monkeypatch):
    # Every Dense of the model (q/k/v/out, MLP, head, tubelet embedding) goes through `linear`.
    cfg = tiny_config(kind, classifier, representation_size=8)
    model = create_model(cfg, num_classes=5)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = model.init(jax.random.key(1), video, train=False)["params"]
    params = randomize(params, jax.random.key(2), scale=0.05)

    def grads():
        def loss(p):
            logits = model.apply({"params": p}, video, train=False)
            return jnp.mean(jax.nn.log_softmax(logits)[:, 0])

        return jax.jit(jax.grad(loss))(params)

    ours = grads()
    monkeypatch.setattr(layers, "BIAS_GRADIENT_IN_MATMUL", False)
    plain = grads()
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
