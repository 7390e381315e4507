"""Video data: TFDS builders, DMVR records, the input pipeline and the `dataset_configs` keys.

Importing this package imports nothing heavy: `vivit_jax.data.config` (the `dataset_configs`
keys) is TensorFlow-free, and `get_dataset` / `Dataset` load the pipeline on first use. The TFDS
builders `kinetics400`, `kinetics600`, `kinetics700`, `something_something_v2` and
`moving_shapes` are registered by `vivit_jax.data.builders`; build any of them with
`python -m vivit_jax.data.build --dataset=<name> ...`.
"""

_LAZY = {"Dataset": "vivit_jax.data.pipeline", "get_dataset": "vivit_jax.data.pipeline"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vivit_jax.data' has no attribute {name!r}")


__all__ = ["Dataset", "get_dataset"]
