"""Locked merging of user config blocks into their defaults: the one way unknown keys are caught.

Used for the whole experiment config (`config_lib`) and for each block whose defaults live with
the package that reads it (`model`, `dataset_configs`, `init_from`). TensorFlow-free.
"""

from __future__ import annotations

import difflib

import ml_collections


def require(cond: bool, msg: str) -> None:
    """Raises `ValueError(msg)` unless `cond`: the form of every config value check."""
    if not cond:
        raise ValueError(msg)


def unknown_key_error(path: str, key: str, known) -> ValueError:
    """The error for `path.key` not being a known key, with a did-you-mean hint."""
    near = difflib.get_close_matches(key, list(known), n=1)
    hint = f" Did you mean '{path}.{near[0]}'?" if near else ""
    return ValueError(
        f"Unknown config key '{path}.{key}'.{hint} Known keys under '{path}': {sorted(known)}."
    )


def merge_locked(
    defaults: ml_collections.ConfigDict, given, path: str, free_form=()
) -> ml_collections.ConfigDict:
    """Copies `given` into `defaults` in place (and returns it); unknown keys raise.

    Args:
      defaults: Every allowed key with its default; nested `ConfigDict`s are merged recursively.
      given: The user's `ConfigDict` or mapping (or None).
      path: Dotted name of this block, used in error messages (e.g. 'config.model').
      free_form: Dotted paths whose value replaces the default wholesale (e.g. a table of
        file names keyed by split).

    Raises:
      ValueError: naming the first unknown key, or a block given as a non-mapping.
    """
    for key, value in (given or {}).items():
        if key not in defaults:
            raise unknown_key_error(path, key, defaults.keys())
        default = defaults[key]
        if isinstance(default, ml_collections.ConfigDict) and f"{path}.{key}" not in free_form:
            if value is None:
                continue
            if not hasattr(value, "items"):
                raise ValueError(f"{path}.{key} must be a ConfigDict, got {value!r}.")
            merge_locked(default, value, f"{path}.{key}", free_form)
        else:
            with defaults.ignore_type():
                defaults[key] = value
    return defaults
