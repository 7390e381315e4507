"""TFDS builders; importing this package registers them with TFDS.

`kinetics400`, `kinetics600`, `kinetics700` and `something_something_v2` read a local copy
(manual download); `moving_shapes` is generated. Build with `python -m vivit_jax.data.build`.
`names` holds the list of them and the message for a name that is none of them; `build_dir`
removes the partial folders of interrupted builds.
"""

from vivit_jax.data.builders.kinetics import Kinetics400, Kinetics600, Kinetics700
from vivit_jax.data.builders.moving_shapes import MovingShapes
from vivit_jax.data.builders.ssv2 import SomethingSomethingV2

__all__ = ["Kinetics400", "Kinetics600", "Kinetics700", "MovingShapes", "SomethingSomethingV2"]
