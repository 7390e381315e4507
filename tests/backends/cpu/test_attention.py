"""The compiled CPU attention kernel: same values and gradients as einsum attention, sharded
inputs stay sharded, and every way the build can fail is a clear error or a logged fallback."""

import collections
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_jax.backends import cpu as cpu_backend
from vivit_jax.backends.cpu import attention as cpu_attention
from vivit_jax.backends.cpu import blocked
from vivit_jax.models import attention as model_attention

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SPEED_SCRIPT = os.path.join(
    REPO,
    "experiments",
    "attention_speed.py",
)

needs_kernel = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not cpu_attention.available(),
    reason="the CPU attention kernel cannot be built here (see the logged warning)",
)


def _value_and_grads(fn, w):
    return jax.value_and_grad(lambda *a: jnp.sum(fn(*a) * w), argnums=(0, 1, 2))


def _qkvw(shape):
    return tuple(jax.random.normal(jax.random.key(i), shape) for i in range(4))


@needs_kernel
@pytest.mark.parametrize("tile_from", [1, 0, None], ids=["tiled", "openblas", "default"])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 4), (2, 37, 3, 16), (1, 1, 1, 64), (2, 45, 2, 64), (3, 130, 2, 64), (1, 200, 2, 64)],
)
def test_kernel_equals_einsum_attention(monkeypatch, shape, tile_from):
    # Odd lengths, one token, head dims 4..64: outputs and the three gradients. Head dim 64 takes
    # the kernel's own tiled products (where built with AVX-512) from `TILE_FROM_TOKENS` tokens
    # on: here from 1 (their row tails: 130 rows in 2 blocks of 65, 45, 200 in 2 of 100; token
    # counts short of a 32-column panel), never (0), or from the default (192: 200 tokens).
    if tile_from is not None:
        monkeypatch.setattr(cpu_attention, "TILE_FROM_TOKENS", tile_from)
    q, k, v, w = _qkvw(shape)
    got_value, got = jax.jit(_value_and_grads(cpu_attention.attention, w))(q, k, v)
    want_value, want = jax.jit(_value_and_grads(model_attention.einsum_attention, w))(q, k, v)
    np.testing.assert_allclose(
        cpu_attention.attention(q, k, v), model_attention.einsum_attention(q, k, v), atol=2e-6
    )
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        # + 1e-6: with one token the q and k gradients are 0, the kernel's a rounding error.
        np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(b).max()) + 1e-6)


@needs_kernel
@pytest.mark.parametrize("head_dim", [8, 64])
@pytest.mark.parametrize("block", [1, 4, 7, 22, 0])
def test_kernel_row_blocks_give_the_same_values_and_gradients(monkeypatch, block, head_dim):
    # Scores a block of rows at a time. 23 rows: 23 blocks of 1; 4,4,4,4,4,3; 6,6,6,5; 12,11;
    # one block of 23. The backward pass's dq sums over the key blocks (head dim 64: in the tiles).
    monkeypatch.setattr(cpu_attention, "BLOCK_ROWS", block)
    monkeypatch.setattr(cpu_attention, "TILE_FROM_TOKENS", 1)
    q, k, v, w = _qkvw((2, 23, 2, head_dim))
    got_value, got = jax.jit(_value_and_grads(cpu_attention.attention, w))(q, k, v)
    want_value, want = jax.jit(_value_and_grads(model_attention.einsum_attention, w))(q, k, v)
    np.testing.assert_allclose(got_value, want_value, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(b).max()))


@needs_kernel
def test_kernel_is_softmax_stable_for_large_scores():
    # Scores of ±1000 (a naive exp overflows): each query attends to the key it matches.
    eye = jnp.eye(8)[None, :, None, :] * 1000.0 * jnp.sqrt(8.0)
    v = jax.random.normal(jax.random.key(0), (1, 8, 1, 8))
    out = cpu_attention.attention(eye, eye, v)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out, v, atol=1e-6)


@needs_kernel
def test_kernel_results_do_not_depend_on_its_thread_count(monkeypatch):
    # Each (batch, head) pair is one worker's work, start to end: bit-identical results. More
    # workers than XLA's pool has threads (32: the pool's tasks start late, some after every pair
    # is done, while the next call runs), each count called a few times in a row.
    q, k, v, w = _qkvw((4, 33, 5, 8))
    fn = _value_and_grads(cpu_attention.attention, w)
    runs = []
    for threads in (1, 2, 5, 32):
        monkeypatch.setattr(cpu_attention, "_threads", lambda devices=1, t=threads: t)
        step = jax.jit(fn)  # a new trace: the thread count is an attribute
        runs += [step(q, k, v) for _ in range(4)]
    for run in runs[1:]:
        for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(run)):
            np.testing.assert_array_equal(a, b)


@needs_kernel
@pytest.mark.parametrize(
    "spec,gathered", [(("data", None, "model"), False), ((None, None, None, "data"), True)]
)
def test_kernel_keeps_batch_and_head_sharding(spec, gathered):
    # Batch over 'data', heads over 'model' (2 x 2 devices): each device computes its own pairs,
    # no collective but the loss's sum. A sharded head dim has to be gathered first.
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
    q, k, v, w = (jax.device_put(t, sharded) for t in _qkvw((4, 17, 6, 8)))
    grad = jax.jit(_value_and_grads(cpu_attention.attention, w))
    hlo = grad.lower(q, k, v).compile().as_text()
    assert cpu_attention._FORWARD in hlo and cpu_attention._BACKWARD in hlo
    collectives = [c for c in ("all-gather(", "all-to-all(", "collective-permute(") if c in hlo]
    if gathered:
        assert collectives  # the head dim is gathered before the kernel runs
    else:
        assert collectives == []
    value, grads = grad(q, k, v)
    want_value, want = _value_and_grads(model_attention.einsum_attention, w)(q, k, v)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for a, b in zip(grads, want):
        if not gathered:
            assert a.sharding.is_equivalent_to(sharded, a.ndim)
        np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(b).max()))


@needs_kernel
def test_the_kernel_rejects_operands_of_different_shapes():
    q = jnp.zeros((1, 4, 2, 8))
    call = jax.ffi.ffi_call(cpu_attention._FORWARD, (q, jax.ShapeDtypeStruct((1, 2, 4), q.dtype)))
    with pytest.raises(Exception, match="k must have q's shape"):
        jax.block_until_ready(
            call(
                q,
                jnp.zeros((1, 5, 2, 8)),
                q,
                threads=np.int64(1),
                block=np.int64(0),
                tile_from=np.int64(1),
            )
        )
    wrong_lse = (q, jax.ShapeDtypeStruct((1, 4, 2), q.dtype))  # [N, L, H], not [N, H, L]
    call = jax.ffi.ffi_call(cpu_attention._FORWARD, wrong_lse)
    with pytest.raises(Exception, match=r"lse must be \[N, H, L\]"):
        jax.block_until_ready(
            call(q, q, q, threads=np.int64(1), block=np.int64(0), tile_from=np.int64(1))
        )


@needs_kernel
def test_fused_attention_runs_the_kernel_on_a_cpu(monkeypatch):
    # Wherever queries and keys are the same tokens and unmasked (the kernel is faster at every
    # length measured, 17 to 785 tokens: experiments/README.md); else XLA's paths.
    q, k, v, _ = _qkvw((2, 16, 4, 8))

    def lowered(*a, **kw):
        # A new function each time: jit's trace cache would not see the environment change.
        attention = model_attention.Attention("xla", cpu_backend.fused_attention)
        fn = lambda *a: model_attention.fused_attention(*a, attention=attention, **kw)  # noqa: E731
        return jax.jit(fn).lower(*a).as_text()

    assert cpu_attention._FORWARD in lowered(q, k, v)
    assert cpu_attention._FORWARD not in lowered(q[:, :1], k, v)  # class token only
    assert cpu_attention._FORWARD not in lowered(q, k, v, key_length=15)  # padded keys
    monkeypatch.setenv(cpu_attention.OPT_OUT_ENV, "0")
    assert not cpu_attention.available()
    assert cpu_attention._FORWARD not in lowered(q, k, v)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel is for XLA:CPU")
def test_an_unbuildable_kernel_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(cpu_attention, "_load", lambda: "no C++ compiler 'c++' on PATH (...)")
    monkeypatch.setattr(cpu_attention, "_warned", set())
    monkeypatch.setattr(blocked, "HEAD_BLOCK_SCORES", 2 * 16**2)
    q, k, v, w = _qkvw((2, 16, 4, 8))
    with caplog.at_level(logging.WARNING):
        value, grads = _value_and_grads(cpu_backend.fused_attention, w)(q, k, v)
        assert not cpu_attention.available()
    warnings = [r.getMessage() for r in caplog.records if "attention kernel" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0]
    want_value, want = _value_and_grads(model_attention.einsum_attention, w)(q, k, v)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for a, b in zip(grads, want):
        np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.abs(b).max()))


def test_build_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(cpu_attention.BuildError, match="no C..? compiler 'no-such-compiler-xyz'"):
        cpu_attention.build(str(tmp_path))
    monkeypatch.delenv("CXX")
    monkeypatch.setitem(sys.modules, "scipy_openblas32", None)  # import fails
    with pytest.raises(cpu_attention.BuildError, match="pip install scipy-openblas32"):
        cpu_attention.build(str(tmp_path))


@needs_kernel
def test_build_reports_the_compiler_error_and_leaves_no_file(monkeypatch, tmp_path):
    bad = tmp_path / "bad.cc"
    bad.write_text("this is not C++;\n")
    monkeypatch.setattr(cpu_attention, "SOURCE", str(bad))
    cache = tmp_path / "cache"
    with pytest.raises(cpu_attention.BuildError, match="(?s)failed.*bad.cc"):
        cpu_attention.build(str(cache))
    assert os.listdir(cache) == []


@needs_kernel
def test_build_is_cached_per_source(monkeypatch, tmp_path):
    path = cpu_attention.build(str(tmp_path))
    stamp = os.stat(path).st_mtime_ns
    assert cpu_attention.build(str(tmp_path)) == path and os.stat(path).st_mtime_ns == stamp
    changed = tmp_path / "changed.cc"
    changed.write_text(open(cpu_attention.SOURCE).read() + "\n// changed\n")
    monkeypatch.setattr(cpu_attention, "SOURCE", str(changed))
    other = cpu_attention.build(str(tmp_path))
    assert other != path and sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(path), os.path.basename(other), "changed.cc"]
    )


@needs_kernel
def test_kernel_threads_share_the_cores_among_the_devices_that_run_it(monkeypatch):
    # One device: every core; data parallel over 4 host devices (concurrent): a quarter each.
    monkeypatch.setattr(cpu_attention.tuning, "schedulable_cores", lambda: 8)
    q = jnp.ones((4, 17, 6, 8))
    fn = jax.jit(cpu_attention.attention)
    assert "threads = 8 :" in fn.lower(q, q, q).compile().as_text()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("data",))
    q = jax.device_put(q, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    assert "threads = 2 :" in fn.lower(q, q, q).compile().as_text()


@needs_kernel
def test_attention_speed_script_times_every_implementation():
    proc = subprocess.run(
        [sys.executable, SPEED_SCRIPT, "--shapes=2x9x2x8,1x3x1x4", "--repeats=1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *rows = proc.stdout.strip().splitlines()
    names = [f"{n} {m}" for n in ("einsum", "blocked", "kernel") for m in ("fwd", "f+b")]
    assert header.split() == ["shape", *" ".join(names).split()]
    assert [r.split()[0] for r in rows] == ["2x9x2x8", "1x3x1x4"]
    assert all(len(r.split()) == 7 and all(float(x) > 0 for x in r.split()[1:]) for r in rows)


@needs_kernel
def test_attention_speed_script_compares_row_blocks_and_openblas(monkeypatch, capsys):
    # --block-rows: one kernel column pair per block size, each compiled with its own block;
    # --openblas: one more, compiled with the tiled products off. The defaults are restored.
    import importlib.util

    spec = importlib.util.spec_from_file_location("attention_speed", SPEED_SCRIPT)
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    traced, ffi_call = collections.Counter(), jax.ffi.ffi_call

    def spy(target, *a, **kw):
        call = ffi_call(target, *a, **kw)
        return lambda *args, **attrs: (
            traced.update([(target, int(attrs["block"]), int(attrs["tile_from"]))]),
            call(*args, **attrs),
        )[1]

    monkeypatch.setattr(jax.ffi, "ffi_call", spy)
    argv = ["--shapes=1x9x2x8", "--repeats=1", "--block-rows=0,3", "--openblas"]
    assert speed.main(argv) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    columns = [
        f"kernel/{name} {mode}" for name in ("0", "3", "openblas") for mode in ("fwd", "f+b")
    ]
    assert header[-12:] == " ".join(columns).split()
    # Each column's forward (its own program: jax.jit reuses a function's trace) and f+b.
    forward, backward = cpu_attention._FORWARD, cpu_attention._BACKWARD
    tile_from = cpu_attention.TILE_FROM_TOKENS
    settings = [(0, tile_from), (3, tile_from), (128, 0)]
    assert traced == {
        **{(forward, *s): 2 for s in settings},
        **{(backward, *s): 1 for s in settings},
    }
    assert (cpu_attention.BLOCK_ROWS, cpu_attention.TILE_FROM_TOKENS) == (128, tile_from)


def test_a_cached_library_that_does_not_load_says_to_delete_it(monkeypatch, tmp_path):
    broken = tmp_path / "cpu_attention-0123456789abcdef.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(cpu_attention, "build", lambda: str(broken))
    reason = cpu_attention._load.__wrapped__()
    assert str(broken) in reason and "delete it to build it again" in reason
