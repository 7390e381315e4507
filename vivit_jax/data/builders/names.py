"""The project's dataset names, and what is said, in a few lines, for a name that is not one.

TFDS's own error for an unknown name lists its whole catalogue (~460 lines), none of which this
project can train on; the message here names the project's datasets and the closest ones.
"""

from __future__ import annotations

import difflib

from vivit_jax.data.config import DMVR_DATASET_NAMES

# The TFDS builders of this package (`python -m vivit_jax.data.build --dataset=<name>`).
DATASETS = (
    "moving_shapes",
    "kinetics400",
    "kinetics600",
    "kinetics700",
    "something_something_v2",
    "moments_in_time",
    "epic_kitchens_100",
    "video_folder",
)

# Short names people type, for the suggestion only.
_ALIASES = {
    "ssv2": "something_something_v2",
    "sthsthv2": "something_something_v2",
    "somethingsomethingv2": "something_something_v2",
    "k400": "kinetics400",
    "k600": "kinetics600",
    "k700": "kinetics700",
    "movingshapes": "moving_shapes",
    "mit": "moments_in_time",
    "momentsintime": "moments_in_time",
    "epic": "epic_kitchens_100",
    "epickitchens": "epic_kitchens_100",
    "epickitchens100": "epic_kitchens_100",
    "ek100": "epic_kitchens_100",
    "videofolder": "video_folder",
    "ucf101": "video_folder",
    "hmdb51": "video_folder",
}


class UnknownDatasetError(ValueError):
    """A dataset name (or config) that is not one of the project's; the message says which are."""


def base_name(name: str) -> str:
    """'kinetics400/short320:1.0.0' → 'kinetics400'."""
    return name.split("/")[0].split(":")[0]


def closest(name: str, known: tuple[str, ...]) -> list[str]:
    base = base_name(name).strip().lower()
    squashed = base.replace("-", "").replace("_", "").replace(" ", "")
    found = [_ALIASES[squashed]] if squashed in _ALIASES else []
    scores = {k: difflib.SequenceMatcher(None, base.replace("-", "_"), k).ratio() for k in known}
    # The best match, and any as good: 'kinetics401' names kinetics400, not all three Kinetics.
    cutoff = max(0.6, max(scores.values()) - 0.05)
    found += sorted((k for k in known if scores[k] >= cutoff), key=lambda k: (-scores[k], k))
    return list(dict.fromkeys(found))


def unknown_dataset_message(name: str, setting: str) -> str:
    """Three lines at most: the name is unknown, the closest names, the project's datasets."""
    known = DATASETS + DMVR_DATASET_NAMES
    lines = [f"{setting}={name!r} is not a known dataset."]
    suggestions = closest(name, known)
    if suggestions:
        lines.append("Did you mean " + " or ".join(suggestions) + "?")
    lines.append(
        "The datasets: " + ", ".join(DATASETS) + " (TFDS builders: python -m vivit_jax.data.build"
        f" --dataset=<name>), and {DMVR_DATASET_NAMES[0]} (Scenic's DMVR TFRecords, read "
        "directly from dataset_configs.base_dir and tables)."
    )
    return "\n".join(lines)


def check_buildable(name: str, setting: str = "--dataset") -> None:
    """Raises UnknownDatasetError unless `name` is one of `DATASETS`, with a config it has.

    Call after `import vivit_jax.data` (the builders must be registered).
    """
    base = base_name(name)
    if base in DMVR_DATASET_NAMES:
        raise UnknownDatasetError(
            f"{setting}={name!r}: DMVR records are not built here; training reads them directly "
            f"(config.dataset_name='{DMVR_DATASET_NAMES[0]}', dataset_configs.base_dir and tables)."
        )
    if base not in DATASETS:
        raise UnknownDatasetError(unknown_dataset_message(name, setting))
    if "/" in name:
        import tensorflow_datasets as tfds

        config = name.split("/", 1)[1].split(":")[0]
        configs = list(tfds.builder_cls(base).builder_configs)
        if config not in configs:
            near = difflib.get_close_matches(config, configs, n=3, cutoff=0.5)
            raise UnknownDatasetError(
                f"{setting}={name!r}: {base} has no config {config!r}"
                + (f" (did you mean {' or '.join(near)}?)" if near else "")
                + f"; its configs: {', '.join(configs)}."
            )
