"""vivit_jax: ViViT video transformers in JAX/Flax.

The model, train step and benchmarks import without TensorFlow; only `vivit_jax.data` uses it.
"""

__version__ = "0.1.0"
