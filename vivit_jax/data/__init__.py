"""Video data: TFDS builders, DMVR records and the tf.data input pipeline.

This is the only package of vivit_jax that imports TensorFlow. TensorFlow is kept off every GPU
on import so that it never competes with JAX for accelerator memory.

Importing this package registers the TFDS builders `kinetics400`, `kinetics600`, `kinetics700`,
`something_something_v2` and `moving_shapes`. Build any of them with
`python -m vivit_jax.data.build --dataset=<name> ...`.
"""

import tensorflow as tf

try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # Already initialised, or no GPU support compiled in.
    pass

from vivit_jax.data import builders  # noqa: E402,F401  (registers the TFDS builders)
from vivit_jax.data.pipeline import Dataset, get_dataset  # noqa: E402
from vivit_jax.dataset_configs import default_dataset_configs  # noqa: E402

__all__ = ["Dataset", "default_dataset_configs", "get_dataset"]
