"""The CPU backend through its one seam: models built with its fused attention give the einsum
path's logits and gradients, and `backends.for_platform` picks it only where it belongs."""

import jax
import pytest

from tests.models.helpers import TINY_INPUT, randomize, tiny_config
from tests.models.test_numerics import KINDS, _assert_same_logits_and_gradients
from vivit_jax import backends
from vivit_jax.backends import cpu as cpu_backend
from vivit_jax.backends.cpu import attention as cpu_attention
from vivit_jax.backends.cpu import blocked
from vivit_jax.models import create_model

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend")


@pytest.mark.parametrize("path", ["kernel", "no kernel, many blocks"])
@pytest.mark.parametrize("kind", KINDS)
def test_models_with_the_cpu_attention_match_einsum(kind, path, monkeypatch):
    # The compiled kernel, or without it `head_blocked_attention` where one head's [L, L] scores
    # do not fit one block (the tiny model's fit unless the block is made smaller; then heads
    # are also zero-padded).
    if path == "no kernel, many blocks":
        monkeypatch.setenv(cpu_attention.OPT_OUT_ENV, "0")
        monkeypatch.setattr(blocked, "HEAD_BLOCK_SCORES", 1)
    reference = create_model(tiny_config(kind, "gap"), num_classes=5)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = reference.init(jax.random.key(1), video, train=False)["params"]
    params = randomize(params, jax.random.key(2), scale=0.05)
    fused_cfg = tiny_config(kind, "gap", attention_implementation="fused", remat=True)
    fused = create_model(fused_cfg, num_classes=5, fused_attention=cpu_backend.fused_attention)
    _assert_same_logits_and_gradients(fused, reference, params, video)


def test_for_platform(monkeypatch):
    assert backends.for_platform("gpu") is backends.PLAIN
    assert backends.for_platform("tpu") is backends.PLAIN
    monkeypatch.setenv("VIVIT_JAX_CPU_TUNING", "0")
    assert backends.for_platform("cpu") is backends.PLAIN
    monkeypatch.delenv("VIVIT_JAX_CPU_TUNING")
    monkeypatch.setattr(backends, "cpu_extra_installed", lambda: False)
    assert backends.for_platform("cpu") is backends.PLAIN
    monkeypatch.setattr(backends, "cpu_extra_installed", lambda: True)
    cpu = backends.for_platform("cpu")
    assert cpu.name == "cpu" and cpu.fused_attention is cpu_backend.fused_attention
    assert cpu.compiler_options == {"xla_cpu_experimental_ynn_fusion_type": ""}
