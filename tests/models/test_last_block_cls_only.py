"""`model.last_block_cls_only`: the last block computes only the tokens that are read.

Same logits and gradients as running every token through every block, less work.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import TINY_INPUT, randomize, tiny_config
from vivit_jax.models import create_model
from vivit_jax.models.attention import Attention
from vivit_jax.models.factorised import factorized_dot_product_attention
from vivit_jax.models.layers import EncoderBlock


@pytest.mark.parametrize("implementation", ["einsum", "fused"])
@pytest.mark.parametrize("n", [1, 3])
def test_block_output_tokens_are_the_first_rows_of_the_full_block(implementation, n):
    # [B, T, L, D]: Model 2's spatial encoder has frames as a second batch axis.
    x = jax.random.normal(jax.random.key(0), (2, 3, 9, 16))
    attention = Attention("einsum" if implementation == "einsum" else "xla")
    kw = dict(mlp_dim=32, num_heads=2, attention=attention)
    full = EncoderBlock(**kw)
    params = randomize(full.init(jax.random.key(1), x, True)["params"], jax.random.key(2))
    few = EncoderBlock(**kw, output_tokens=n)
    # The same parameter tree: a checkpoint serves either.
    assert jax.tree.structure(few.init(jax.random.key(1), x, True)["params"]) == (
        jax.tree.structure(params)
    )
    want = full.apply({"params": params}, x, True)[..., :n, :]
    got = few.apply({"params": params}, x, True)
    assert got.shape == (2, 3, n, 16)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Every token still serves as a key: moving a late token moves the first one's output.
    # (A random direction: LayerNorm hides a constant shift.)
    nudge = jax.random.normal(jax.random.key(3), (16,))
    moved = few.apply({"params": params}, x.at[:, :, -1].add(nudge), True)
    assert float(jnp.abs(moved - got).max()) > 1e-3


def test_block_output_tokens_need_the_standard_attention_core():
    x = jnp.zeros((2, 4, 6, 16))
    block = EncoderBlock(
        mlp_dim=32, num_heads=2, attention_core=factorized_dot_product_attention, output_tokens=1
    )
    with pytest.raises(ValueError, match="output_tokens"):
        block.init(jax.random.key(0), x, True)


CASES = [
    ("spacetime", {}),
    ("spacetime", {"remat": True, "attention_implementation": "fused", "representation_size": 24}),
    ("factorized_encoder", {}),
    ("factorized_encoder", {"attention_config": {"spatial_only_baseline": True}}),
]


def _pair(kind, extra, **overrides):
    """The model with and without the shortcut, and parameters for both."""
    models = [
        create_model(tiny_config(kind, "token", last_block_cls_only=flag, **extra, **overrides), 7)
        for flag in (True, False)
    ]
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = models[1].init(jax.random.key(1), video, train=False)["params"]
    return models, video, randomize(params, jax.random.key(2))


@pytest.mark.parametrize("kind,extra", CASES)
def test_same_logits_and_gradients_with_less_work(kind, extra):
    # Stochastic depth in training: both draw the same per-example masks from the same rng.
    (short, full), video, params = _pair(kind, extra, stochastic_droplayer_rate=0.5)
    labels = jax.nn.one_hot(jnp.arange(video.shape[0]) % 7, 7)

    def loss(model, p, train):
        logits = model.apply({"params": p}, video, train=train, rngs={"dropout": jax.random.key(5)})
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), -1)), logits

    for train in (False, True):
        grad = jax.value_and_grad(loss, argnums=1, has_aux=True)
        (l_short, y_short), g_short = grad(short, params, train)
        (l_full, y_full), g_full = grad(full, params, train)
        assert float(jnp.std(y_full)) > 1e-2  # the comparison is not between zeros
        np.testing.assert_allclose(y_short, y_full, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(l_short, l_full, rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_short, g_full
        )

    # The shortcut is taken: the forward program does less work.
    flops = [
        jax.jit(lambda p, v, m=m: m.apply({"params": p}, v, train=False))
        .lower(params, video)
        .cost_analysis()["flops"]
        for m in (short, full)
    ]
    assert flops[0] < 0.95 * flops[1]


def test_preclassifier_output_keeps_every_token():
    (short, full), video, params = _pair("spacetime", {}, return_preclassifier=True)
    a = short.apply({"params": params}, video, train=False)
    b = full.apply({"params": params}, video, train=False)
    assert a.shape == b.shape == (2, 4 * 4 * 4 + 1, 32)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_gap_classifier_runs_every_token():
    cfgs = [tiny_config("spacetime", "gap", last_block_cls_only=f) for f in (True, False)]
    video = jax.ShapeDtypeStruct(TINY_INPUT, jnp.float32)
    flops = []
    for cfg in cfgs:
        model = create_model(cfg, 7)
        params = jax.eval_shape(lambda v, m=model: m.init(jax.random.key(0), v, train=False), video)
        fwd = jax.jit(lambda p, v, m=model: m.apply(p, v, train=False))
        flops.append(fwd.lower(params, video).cost_analysis()["flops"])
    assert flops[0] == flops[1]


@pytest.mark.parametrize("key", ["last_block_cls_only", "remat"])
def test_switches_must_be_booleans(key):
    with pytest.raises(ValueError, match=f"model.{key} must be True or False"):
        create_model(tiny_config("spacetime", "token", **{key: "yes"}), 7)
