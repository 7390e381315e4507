"""The config fingerprint a train-state checkpoint stores: the keys that define an experiment.

A resume compares the checkpoint's fingerprint with the config's and refuses another experiment's
workdir (`vivit_jax.checkpoints.train_state.Checkpointer.check_config`), naming each key that
differs with both values.
"""

from __future__ import annotations

import json

# The config keys that define an experiment (its maths and data), compared on resume. Logging,
# evaluation, checkpoint cadence, sharding and paths may change between runs of one experiment.
FINGERPRINT_KEYS = (
    "model_name",
    "model",
    "model_dtype_str",
    "dataset_name",
    "dataset_configs",
    "batch_size",
    "rng_seed",
    "optimizer",
    "optimizer_configs",
    "lr_configs",
    "num_training_steps",
    "num_training_epochs",
    "max_grad_norm",
    "l2_decay_factor",
    "label_smoothing",
    "mixup",
    "freeze",
)
# dataset_configs keys that are paths or only steer speed or evaluation.
_FINGERPRINT_SKIP = (
    "dataset_configs.data_dir",
    "dataset_configs.base_dir",
    "dataset_configs.num_parallel_calls",
    "dataset_configs.num_workers",
    "dataset_configs.prefetch",
    "dataset_configs.prefetch_to_device",
    "dataset_configs.test_batch_size",
    "dataset_configs.num_test_clips",
    "dataset_configs.do_three_spatial_crops",
    "dataset_configs.do_multicrop_test",
    "dataset_configs.log_test_epochs",
    "dataset_configs.examples_per_subset",
)


def _flatten(value, prefix: str, out: dict) -> None:
    if hasattr(value, "items"):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif prefix not in _FINGERPRINT_SKIP:
        # JSON text, so tuples and lists (and a value read back from JSON) compare equal.
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def config_fingerprint(config) -> dict[str, str]:
    """`{'model.hidden_size': '64', ...}`: the `FINGERPRINT_KEYS` of `config`, flattened."""
    out: dict[str, str] = {}
    for key in FINGERPRINT_KEYS:
        value = config[key]
        _flatten(value.to_dict() if hasattr(value, "to_dict") else value, key, out)
    return out


def fingerprint_diff(saved: dict, current: dict, defaults: dict | None = None) -> list[str]:
    """`['key (checkpoint: a, now: b)', ...]` for every key whose value differs.

    A key the checkpoint lacks (one added to the config after it was written) counts as equal
    when `current` holds its value in `defaults`, the fingerprint of the default config.
    """
    missing = "<absent>"
    defaults = defaults or {}

    def differs(k):
        if k not in saved and k in defaults and current.get(k) == defaults[k]:
            return False
        return saved.get(k, missing) != current.get(k, missing)

    return [
        f"{k} (checkpoint: {saved.get(k, missing)}, now: {current.get(k, missing)})"
        for k in sorted(set(saved) | set(current))
        if differs(k)
    ]
