"""TFDS builders; importing this package registers them with TFDS.

`kinetics400`, `kinetics600`, `kinetics700`, `something_something_v2`, `moments_in_time` and
`epic_kitchens_100` read a local copy (manual download); `video_folder` reads a user's own
videos; `moving_shapes` is generated. Build with `python -m vivit_jax.data.build`. `names` holds
the list of them and the message for a name that is none of them; `build_dir` removes the
partial folders of interrupted builds.
"""

from vivit_jax.data.builders.epic_kitchens import EpicKitchens100
from vivit_jax.data.builders.kinetics import Kinetics400, Kinetics600, Kinetics700
from vivit_jax.data.builders.moments_in_time import MomentsInTime
from vivit_jax.data.builders.moving_shapes import MovingShapes
from vivit_jax.data.builders.ssv2 import SomethingSomethingV2
from vivit_jax.data.builders.video_folder import VideoFolder

__all__ = [
    "EpicKitchens100",
    "Kinetics400",
    "Kinetics600",
    "Kinetics700",
    "MomentsInTime",
    "MovingShapes",
    "SomethingSomethingV2",
    "VideoFolder",
]
