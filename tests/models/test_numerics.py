"""Speed switches keep the numerics: bf16 ≈ float32, remat = same gradients, fused = einsum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import TINY_INPUT, randomize, tiny_config
from vivit_jax.models import Attention, create_model
from vivit_jax.models import attention as attention_lib

KINDS = [
    "spacetime",
    "factorized_encoder",
    "factorized_self_attention_block",
    "factorized_dot_product_attention",
]


def _setup(kind, **overrides):
    cfg = tiny_config(kind, "gap", **overrides)
    model = create_model(cfg, num_classes=5)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = model.init(jax.random.key(1), video, train=False)["params"]
    return cfg, model, video, randomize(params, jax.random.key(2), scale=0.05)


def _forward(model, params, video):
    return jax.jit(lambda p, v: model.apply({"params": p}, v, train=False))(params, video)


def _loss(model, params, video, train):
    logits = model.apply(
        {"params": params}, video, train=train, rngs={"dropout": jax.random.key(4)}
    )
    return jnp.mean(jax.nn.log_softmax(logits)[:, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_close_to_float32(kind):
    cfg, model, video, params = _setup(kind)
    bf16 = create_model(cfg, num_classes=5, dtype="bfloat16")
    ref = _forward(model, params, video)
    out = _forward(bf16, params, video)
    assert out.dtype == jnp.float32  # logits come back in float32
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.abs(ref).max()) + 1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_remat_gives_identical_gradients(kind):
    # Dropout and stochastic depth on: remat must replay the same random masks.
    over = dict(dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_droplayer_rate=0.3)
    cfg, model, video, params = _setup(kind, **over)
    remat = create_model(tiny_config(kind, "gap", remat=True, **over), num_classes=5)
    g0 = jax.jit(jax.grad(lambda p: _loss(model, p, video, True)))(params)
    g1 = jax.jit(jax.grad(lambda p: _loss(remat, p, video, True)))(params)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_attention_matches_einsum(kind):
    # Off a GPU, without a backend's fused core, `fused` is `jax.nn.dot_product_attention`'s
    # XLA path (the CPU backend's kernel: tests/backends/cpu).
    cfg, model, video, params = _setup(kind)
    fused_cfg = tiny_config(kind, "gap", attention_implementation="fused", remat=True)
    fused = create_model(fused_cfg, num_classes=5, platform="cpu")
    assert fused.attention == Attention("xla")
    _assert_same_logits_and_gradients(fused, model, params, video)


def _assert_same_logits_and_gradients(model, reference, params, video):
    """float32 logits and training gradients of `model` are `reference`'s, to rounding."""
    with jax.default_matmul_precision("highest"):  # float32 on a GPU too (its default is TF32)
        outs = [_forward(m, params, video) for m in (model, reference)]
        grads = [
            jax.jit(jax.grad(lambda p, m=m: _loss(m, p, video, True)))(params)
            for m in (model, reference)
        ]
    np.testing.assert_allclose(*outs, rtol=1e-5, atol=1e-5)
    for a, b in zip(*map(jax.tree.leaves, grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fused_asks_for_cudnn_only_on_a_gpu_in_16_bit():
    resolve = Attention.resolve
    assert resolve("fused", jnp.bfloat16, "cpu") == Attention("xla")
    assert resolve("fused", jnp.bfloat16, "gpu") == Attention("cudnn")
    assert resolve("fused", jnp.float16, "gpu") == Attention("cudnn")
    assert resolve("fused", jnp.float32, "gpu") == Attention("xla")  # cuDNN has no float32
    assert resolve("einsum", jnp.bfloat16, "gpu") == Attention("einsum")
    assert resolve("fused", jnp.bfloat16, "gpu").pad_to_even
    assert not resolve("fused", jnp.float32, "gpu").pad_to_even
    with pytest.raises(ValueError, match="model.attention_implementation='flash'"):
        resolve("flash", jnp.float32, "gpu")


def test_the_model_decides_its_attention_when_built(monkeypatch):
    # The platform is read once, by create_model; applying the model never asks for it.
    cfg = tiny_config("spacetime", "token", attention_implementation="fused")
    model = create_model(cfg, num_classes=5, dtype="bfloat16", platform="gpu")
    assert model.attention == Attention("cudnn")

    def no_asking():
        raise AssertionError("jax.default_backend() asked while tracing")

    monkeypatch.setattr(jax, "default_backend", no_asking)
    video = jnp.zeros(TINY_INPUT)
    jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)


ON_GPU = pytest.mark.skipif(
    jax.default_backend() != "gpu", reason="needs a GPU (JAX_PLATFORMS=cuda)"
)


def _scores_with_a_negative_offset(dtype, length=65):
    """q, k, v `[2, length, 4, 8]` whose scores share an offset of -16 / sqrt(8): softmax ignores
    it, but a zero padding key left unmasked (score 0) would take most of every row's weight."""
    q, k, v = (jax.random.normal(jax.random.key(i), (2, length, 4, 8)) for i in range(3))
    q, k = q.at[..., 0].set(4.0), k.at[..., 0].set(-4.0)
    return tuple(t.astype(dtype) for t in (q, k, v))


@pytest.mark.parametrize(
    "implementation,dtype,tol",
    [("xla", jnp.float32, 1e-5), pytest.param("cudnn", jnp.bfloat16, 3e-2, marks=ON_GPU)],
)
def test_odd_lengths_padded_for_cudnn_keep_attention_and_its_gradients(implementation, dtype, tol):
    # The padding `fused` applies for cuDNN (odd length + 1 key hidden by the padding mask,
    # padded query dropped): same values and gradients as unpadded float32 attention, through
    # XLA here (exact) and through cuDNN on a GPU (bf16: `tol` of the largest value).
    q, k, v = _scores_with_a_negative_offset(dtype)
    f32 = lambda *a: jax.nn.dot_product_attention(  # noqa: E731
        *(t.astype(jnp.float32) for t in a), implementation="xla"
    )
    padded = lambda *a: attention_lib.even_length_attention(*a, implementation=implementation)  # noqa: E731
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a).astype(jnp.float32)))  # noqa: E731
    grads = lambda fn: jax.grad(loss(fn), argnums=(0, 1, 2))(q, k, v)  # noqa: E731
    # Full float32 matmuls for the reference: a GPU's default float32 precision is TF32.
    with jax.default_matmul_precision("highest"):
        expected, expected_grads = f32(q, k, v), grads(f32)
        unmasked = f32(*(jnp.pad(t, ((0, 0), (0, 1), (0, 0), (0, 0))) for t in (q, k, v)))
        scale = float(jnp.abs(expected).max())
        assert float(jnp.abs(unmasked[:, :-1] - expected).max()) > 0.3 * scale  # would show
        np.testing.assert_allclose(padded(q, k, v).astype(jnp.float32), expected, atol=tol * scale)
        for a, b in zip(grads(padded), expected_grads):
            b_scale = float(jnp.abs(b).max())
            np.testing.assert_allclose(a.astype(jnp.float32), b, atol=tol * b_scale)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN is there on a GPU")
@pytest.mark.parametrize("classifier", ["gap", "token"])
def test_fused_falls_back_to_xla_when_cudnn_is_unavailable(classifier, monkeypatch, caplog):
    # Pretend to be on a GPU: JAX's cuDNN call then raises while tracing ("cuDNN is not
    # detected" on a CPU-only jaxlib), and `fused` must fall back to XLA's attention, warning once.
    # With a class token the encoder has padded its odd length for cuDNN, and the fallback runs
    # `even_length_attention` through XLA with the key length (its masking is held to float32
    # by test_odd_lengths_padded_for_cudnn_...[xla]; in bf16 here an unmasked pad would hide).
    cfg = tiny_config("spacetime", classifier)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = create_model(cfg, num_classes=5).init(jax.random.key(1), video, train=False)
    params = randomize(params["params"], jax.random.key(2), scale=0.05)
    monkeypatch.setattr(attention_lib, "_warned_fallback", set())
    bf16 = dict(num_classes=5, dtype="bfloat16")
    fused_cfg = tiny_config("spacetime", classifier, attention_implementation="fused")
    fused = create_model(fused_cfg, **bf16, platform="gpu")
    with caplog.at_level("WARNING"):
        out = _forward(fused, params, video)
    assert sum("cuDNN flash attention is unavailable" in r.message for r in caplog.records) == 1
    np.testing.assert_allclose(out, _forward(create_model(cfg, **bf16), params, video), atol=2e-2)


@ON_GPU
@pytest.mark.parametrize(  # even sequence lengths (GAP), and odd ones (a class token)
    "classifier,kind", [("gap", kind) for kind in KINDS] + [("token", kind) for kind in KINDS[:2]]
)
def test_fused_uses_cudnn_on_a_gpu_and_matches_einsum(kind, classifier):
    """On a GPU in bf16, `fused` compiles to cuDNN's flash attention, forward and backward,
    with remat too (JAX checks cuDNN's training limits only when it differentiates), and is as
    accurate as the einsum path in bf16. (Models 3 and 4 take no class token.)"""
    bf16 = dict(num_classes=5, dtype="bfloat16")
    einsum = create_model(tiny_config(kind, classifier), **bf16)
    fused = create_model(
        tiny_config(kind, classifier, attention_implementation="fused", remat=True), **bf16
    )
    f32 = create_model(tiny_config(kind, classifier), num_classes=5, dtype="float32")
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = einsum.init(jax.random.key(1), video, train=False)["params"]
    params = randomize(params, jax.random.key(2), scale=0.05)

    def compiled_grad(model):  # compiled once: its HLO text and its gradients
        step = jax.jit(jax.grad(lambda p: _loss(model, p, video, True))).lower(params).compile()
        return step.as_text(), step(params)

    fused_hlo, fused_grads = compiled_grad(fused)
    einsum_hlo, einsum_grads = compiled_grad(einsum)
    assert "fmha" in fused_hlo, "no cuDNN attention custom call in the compiled gradient"
    assert "fmha" not in einsum_hlo
    with jax.default_matmul_precision("highest"):
        ref = _forward(f32, params, video)
    out = _forward(fused, params, video)
    assert np.isfinite(out).all(), "fused forward is not finite"
    # bf16 logits are off the float32 ones by about 1% of their largest either way: fused must
    # be as close as einsum (3x its error; with a broken padding mask it was 6x, emulated).
    einsum_error = float(jnp.abs(_forward(einsum, params, video) - ref).max())
    fused_error = float(jnp.abs(out - ref).max())
    assert fused_error <= 3 * einsum_error + 1e-3 * float(jnp.abs(ref).max()), "forward"
    # Per leaf, 5% of its largest gradient, and 1% of the model's largest as a floor: some
    # leaves' true gradient is zero (a key bias adds the same score to a whole softmax row, which
    # softmax ignores), so both paths hold only rounding noise there.
    floor = 0.01 * max(float(jnp.abs(b).max()) for b in jax.tree.leaves(einsum_grads))
    fused_leaves = jax.tree_util.tree_leaves_with_path(fused_grads)
    for (path, a), b in zip(fused_leaves, jax.tree.leaves(einsum_grads)):
        name = jax.tree_util.keystr(path)
        assert np.isfinite(a).all(), f"fused gradient {name} is not finite"
        np.testing.assert_allclose(a, b, atol=0.05 * float(jnp.abs(b).max()) + floor, err_msg=name)


def test_dropout_and_stochastic_depth_only_in_training():
    over = dict(dropout_rate=0.3, attention_dropout_rate=0.3, stochastic_droplayer_rate=0.5)
    _, model, video, params = _setup("spacetime", **over)
    a = model.apply({"params": params}, video, train=False)
    b = model.apply({"params": params}, video, train=False)
    np.testing.assert_array_equal(a, b)
    t1 = model.apply({"params": params}, video, train=True, rngs={"dropout": jax.random.key(0)})
    t2 = model.apply({"params": params}, video, train=True, rngs={"dropout": jax.random.key(1)})
    assert np.abs(t1 - t2).max() > 1e-4


def test_stochastic_depth_drops_whole_branches_per_example_without_rescaling():
    from vivit_jax.models.layers import EncoderBlock

    x = jax.random.normal(jax.random.key(0), (64, 5, 16))
    block = EncoderBlock(mlp_dim=32, num_heads=2, droplayer_p=0.5)
    params = randomize(block.init(jax.random.key(1), x, True)["params"], jax.random.key(2))
    y = jax.jit(
        lambda p: block.apply({"params": p}, x, False, rngs={"dropout": jax.random.key(3)})
    )(params)
    full = jax.jit(lambda p: block.apply({"params": p}, x, True))(params)
    # Each example either equals the deterministic output (both branches kept, not rescaled),
    # or differs from it; with p=0.5 per branch about a quarter keep both.
    same = np.all(np.isclose(y, full, atol=1e-6), axis=(1, 2))
    assert 4 <= same.sum() <= 32
    identity = np.all(np.isclose(y, x, atol=1e-6), axis=(1, 2))  # both branches dropped
    assert 4 <= identity.sum() <= 32


@pytest.mark.parametrize("last_block_cls_only", [True, False])
@pytest.mark.parametrize("kind", KINDS[:2])
def test_encoder_pads_odd_lengths_once_for_cudnn(kind, last_block_cls_only, monkeypatch):
    """With a class token (odd lengths) and cuDNN attention, each encoder pads its tokens once
    (a key hidden from every query in every block) instead of every attention call padding q, k
    and v: the same logits and gradients as the einsum path, with remat too. cuDNN is emulated
    through XLA's attention, which here refuses odd lengths as cuDNN does."""
    calls = []

    def emulated(q, k, v, *args, implementation=None, key_value_seq_lengths=None, **kwargs):
        if implementation == "cudnn":
            assert q.shape[1] % 2 == 0, f"cuDNN called at odd length {q.shape[1]}"
            calls.append((q.shape[1], key_value_seq_lengths))
            implementation = "xla"
        return real(q, k, v, *args, implementation=implementation,
                    key_value_seq_lengths=key_value_seq_lengths, **kwargs)  # fmt: skip

    real = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", emulated)
    over = dict(last_block_cls_only=last_block_cls_only)
    einsum = create_model(tiny_config(kind, "token", **over), num_classes=5)
    fused = create_model(
        tiny_config(kind, "token", attention_implementation="fused", remat=True, **over),
        num_classes=5,
    ).clone(attention=Attention("cudnn"))  # cuDNN's attention in float32: emulated below
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = einsum.init(jax.random.key(1), video, train=False)["params"]
    params = randomize(params, jax.random.key(2), scale=0.05)
    _assert_same_logits_and_gradients(fused, einsum, params, video)
    # Every cuDNN call saw the padded (even) length and the true one as its key length.
    assert calls and all(n % 2 == 0 and lengths is not None for n, lengths in calls)
    # One pad per encoder (Model 1: one; factorised encoder: spatial and temporal), none per
    # block: the forward's jaxpr holds as many pads as the einsum model's plus the encoders'.
    pads = lambda m: _count_primitive(  # noqa: E731
        jax.make_jaxpr(lambda p: m.apply({"params": p}, video, train=False))(params).jaxpr, "pad"
    )
    assert pads(fused) - pads(einsum) == {"spacetime": 1, "factorized_encoder": 2}[kind]


def _count_primitive(jaxpr, name: str) -> int:
    """How many times primitive `name` runs in `jaxpr`, sub-jaxprs (jit, remat, ...) included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(sub, "eqns"):
                    count += _count_primitive(sub, name)
    return count
