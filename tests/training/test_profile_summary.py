"""`experiments/profile_summary.py`: a profiler trace's kernel time, by kind."""

import os
import sys

import jax
import jax.numpy as jnp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import profile_summary  # noqa: E402

from vivit_jax.backends.cpu import tuning as cpu_tuning  # noqa: E402


@pytest.mark.parametrize(
    "name, hlo_op, category",
    [
        # Kernel names seen in an H200 trace of ViViT-B's training step.
        (
            "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64",
            "",
            "attention",
        ),
        ("nvjet_sm90_tst_256x144_64x4_1x2_h_bz_coopA_TNT", "", "matmul"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "", "matmul"),
        ("loop_pad_fusion", "pad_fusion.3", "other"),
        ("input_reduce_fusion", "", "other"),
        ("fusion_12", "custom-call.4", "other"),
        # XLA:CPU names its kernels after the HLO instruction.
        ("dot.54", "dot.54", "matmul"),
        ("copy_bitcast_fusion.19", "copy_bitcast_fusion.19", "copy"),
        ("wrapped_reduce-window.21", "wrapped_reduce-window.21", "other"),
    ],
)
def test_kernel_category(name, hlo_op, category):
    assert profile_summary.kernel_category(name, hlo_op) == category


def test_kernel_family_drops_instance_numbers_only():
    assert profile_summary.kernel_family("loop_add_fusion_12") == "loop_add_fusion"
    assert profile_summary.kernel_family("fusion.3.1") == "fusion"
    assert profile_summary.kernel_family("dot") == "dot"
    name = "nvjet_sm90_tst_256x144_64x4_1x2_h_bz_coopA_TNT"
    assert profile_summary.kernel_family(name) == name


def test_summarize_a_cpu_trace(tmp_path):
    """A traced matmul-heavy function: its dots are found, timed and counted per call.

    Compiled as the project compiles on a CPU (Eigen dots: jaxlib's default YNNPACK would fold
    the dots into `ynn_fusion` kernels that name no matmul).
    """
    a = jnp.ones((384, 384))
    f = (
        jax.jit(lambda x: jnp.tanh(x @ x @ x).sum())
        .lower(a)
        .compile(compiler_options=cpu_tuning.compiler_options())
    )
    f(a).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        for _ in range(3):
            f(a).block_until_ready()
    summary = profile_summary.summarize(str(tmp_path))
    assert summary["kernel_s"] > 0
    cats = summary["by_category"]
    assert "matmul" in cats and cats["matmul"]["s"] > 0
    assert sum(c["fraction"] for c in cats.values()) == pytest.approx(1.0)
    dots = [k for k in summary["top"] if k["category"] == "matmul"]
    assert dots and sum(k["count"] for k in dots) == 3 * 2  # two dots per call, three calls
    text = profile_summary.format_summary(summary, steps=3)
    assert "per step" in text and "matmul" in text


def test_no_trace_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no \\*.xplane.pb under"):
        profile_summary.summarize(str(tmp_path))
