"""TFDS builders (build time only: they import TensorFlow and TFDS); `register()` registers them.

`kinetics400`, `kinetics600`, `kinetics700`, `something_something_v2`, `epic_kitchens_100`,
`moments_in_time` and `video_folder` (a user's own videos) read a local copy (manual download);
`moving_shapes` is generated. Build with `python -m vivit_jax.data.build`. `names` holds the
list of them and the message for a name that is none of them; `build_dir` removes the partial
folders of interrupted builds. Importing this package imports no builder (the training process
reads built datasets without TFDS: `vivit_jax.data.sources`).
"""


def register() -> None:
    """Registers every builder with TFDS (importing a builder module registers it)."""
    from vivit_jax.data.builders import (  # noqa: F401
        epic_kitchens,
        kinetics,
        moments_in_time,
        moving_shapes,
        ssv2,
        video_folder,
    )
