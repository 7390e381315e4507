"""`vivit_jax.cpu_tuning`: the XLA:CPU compiler options of the project's jits."""

import jax
import jax.numpy as jnp
import pytest

from vivit_jax import cpu_tuning

OPTION = "xla_cpu_experimental_ynn_fusion_type"


def test_cpu_gets_eigen_dots():
    assert cpu_tuning.compiler_options("cpu", environ={}) == {OPTION: ""}


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_other_backends_untouched(backend):
    assert cpu_tuning.compiler_options(backend, environ={}) is None


def test_users_xla_flags_win():
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 --{OPTION}=individual_dot"}
    assert cpu_tuning.compiler_options("cpu", environ=env) is None


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_opt_out(value):
    assert cpu_tuning.compiler_options("cpu", environ={cpu_tuning.OPT_OUT_ENV: value}) is None


def _dot_hlo(options) -> str:
    x = jnp.ones((64, 32))
    return jax.jit(lambda a: a @ a.T, compiler_options=options).lower(x).compile().as_text()


def test_options_change_the_compiled_dot():
    """With the options the dot is XLA's own (Eigen); jaxlib's default wraps it for YNNPACK."""
    assert "ynn" not in _dot_hlo(cpu_tuning.compiler_options("cpu", environ={})).lower()
    if "ynn" not in _dot_hlo(None).lower():
        pytest.skip(f"jaxlib {jax.__version__} no longer sends dots to YNNPACK by default")
