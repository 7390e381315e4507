"""The CPU backend's attention without its compiled kernel: XLA's blocked attention equals the
einsum path, keeps a sharded batch on its devices, and stores no attention matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_jax.backends import cpu as cpu_backend
from vivit_jax.backends.cpu import attention as cpu_attention
from vivit_jax.backends.cpu import blocked
from vivit_jax.models.attention import einsum_attention


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize("shape", [(1, 33, 5, 8), (3, 1, 17, 3, 16)])
def test_head_blocked_attention_equals_einsum_attention(shape, dtype, tol, monkeypatch):
    # Blocks of 2 heads' scores (the head count, 5 or 3, is odd: one zero-padded head), values
    # and all three gradients against the einsum path, any leading batch axes.
    batch, length, heads = np.prod(shape[:-3]), shape[-3], shape[-2]
    monkeypatch.setattr(blocked, "HEAD_BLOCK_SCORES", 2 * batch * length**2)
    q, k, v, w = (jax.random.normal(jax.random.key(i), shape, dtype) for i in range(4))

    def loss(fn):
        return lambda *a: jnp.sum(fn(*a).astype(jnp.float32) * w)

    fn = blocked.head_blocked_attention
    flat = tuple(t.reshape((-1,) + shape[-3:]) for t in (q, k, v))
    assert heads % 2 and blocked.head_group(batch, heads, length) == 2
    out = fn(*flat).reshape(shape)
    ref = einsum_attention(q, k, v)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out.astype(jnp.float32), ref.astype(jnp.float32), atol=tol)

    def flat_fn(*a):
        return fn(*(t.reshape((-1,) + shape[-3:]) for t in a)).reshape(shape)

    grads = [jax.grad(loss(f), argnums=(0, 1, 2))(q, k, v) for f in (flat_fn, einsum_attention)]
    for a, b in zip(*grads):
        assert a.dtype == dtype
        scale = float(jnp.abs(b.astype(jnp.float32)).max())
        np.testing.assert_allclose(a.astype(jnp.float32), b.astype(jnp.float32), atol=tol * scale)


def test_head_blocked_attention_keeps_a_sharded_batch_on_its_devices(monkeypatch):
    # Data parallel (batch sharded as train.py shards it): each device attends over its own
    # clips only. Folding the batch into the looped axis once made XLA all-gather q, k and v
    # and run every device's attention on every device (2x slower on 2 host devices).
    monkeypatch.setattr(blocked, "HEAD_BLOCK_SCORES", 2 * 4 * 16**2)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    q, k, v = (
        jax.device_put(jax.random.normal(jax.random.key(i), (4, 16, 6, 8)), sharded)
        for i in range(3)
    )

    def value_and_grads(fn):
        return jax.value_and_grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=(0, 1, 2))

    grad = jax.jit(value_and_grads(blocked.head_blocked_attention))
    hlo = grad.lower(q, k, v).compile().as_text()
    assert " while(" in hlo  # the blocked path, not einsum
    collectives = ("all-gather(", "all-to-all(", "collective-permute(", "all-reduce(")
    assert [c for c in collectives if c in hlo] == ["all-reduce("]  # the loss's sum only
    value, grads = grad(q, k, v)
    want, want_grads = value_and_grads(einsum_attention)(q, k, v)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for a, b in zip(grads, want_grads):
        assert a.sharding.is_equivalent_to(sharded, a.ndim)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", ["1", "0"])
def test_the_backend_keeps_no_attention_matrix_for_its_backward_pass(kernel, monkeypatch):
    # What the backward pass keeps (the VJP's residuals): einsum's include the [N, H, L, L]
    # probabilities; the kernel and the XLA blocked path keep q, k, v, the output and one
    # log-sum-exp per row.
    monkeypatch.setenv(cpu_attention.OPT_OUT_ENV, kernel)  # "0": the blocked path
    monkeypatch.setattr(blocked, "HEAD_BLOCK_SCORES", 2 * 64 * 64)
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 64, 4, 8)) for i in range(3))
    attention_matrix = 2 * 4 * 64 * 64

    def largest_residual(fn):
        _, vjp = jax.vjp(fn, q, k, v)
        return max(x.size for x in jax.tree.leaves(vjp))

    assert largest_residual(einsum_attention) >= attention_matrix
    assert largest_residual(cpu_backend.fused_attention) <= q.size
