"""The `--config=file.py[:arg]` flag of the command lines and the config files it loads.

`define_config_flag()` defines the flag with ml_collections (`--config.key=value` overrides on
every key of `vivit_jax.config_lib.default_config()`); a file is loaded by `load_config_file` and
filled with every default before the overrides apply, so a Scenic config accepts overrides of
keys it does not set. A missing file, a file without `get_config`, a misspelt override: each is
one error naming the file or the key.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re

from ml_collections import ConfigDict, config_flags
from ml_collections.config_flags import config_flags as config_flags_impl

from vivit_jax.config_lib import fill_defaults
from vivit_jax.configdicts import unknown_key_error


def load_config_file(spec: str) -> ConfigDict:
    """Loads `file.py[:arg]`: the file's `get_config(arg)`, filled with every default.

    Raises:
      ValueError: naming the file, when it is missing, does not parse, has no `get_config`, or
        `get_config` fails or returns no config; naming the key for an unknown key.
    """
    path, *arg = spec.split(":", 1)
    if not os.path.isfile(path):
        near = ""
        if os.path.isdir(os.path.dirname(path) or "."):
            names = [n for n in os.listdir(os.path.dirname(path) or ".") if n.endswith(".py")]
            close = difflib.get_close_matches(os.path.basename(path), names, n=3)
            near = f" Similar files there: {close}." if close else ""
        raise ValueError(f"No config file {path!r}.{near}")
    name = "vivit_config_" + re.sub(r"\W", "_", os.path.abspath(path))
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(
            f"The config file {path} does not parse: line {e.lineno}: {e.msg}."
        ) from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(
            f"The config file {path} defines no get_config(); a config file defines "
            "`get_config(arg=None)` returning an ml_collections.ConfigDict."
        )
    try:
        config = get_config(*arg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: get_config({', '.join(map(repr, arg))}) failed: {e}") from None
    if config is None:
        raise ValueError(f"{path}: get_config() returned None (a missing `return config`?).")
    try:
        return fill_defaults(config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


class _ConfigFileParser(config_flags_impl.ConfigFileFlagParser):
    """ml_collections' config-file parser, filling the file's config with every default before
    the `--config.key=value` overrides are applied (`fill_defaults`)."""

    overrides = staticmethod(lambda: [])  # The `--config.a.b` paths; set by define_config_flag.

    def parse(self, path):
        config = load_config_file(path)
        for override in self.overrides():  # ml_collections' own error is a raw AttributeError.
            _check_override_path(config, override)
        return config


def _check_override_path(config, override: str) -> None:
    """ValueError with a did-you-mean when `--config.<override>` names no key of `config`."""
    node, done = config, "config"
    for key in override.split("."):
        if not isinstance(node, ConfigDict):
            return  # A field of a non-config value (ml_collections checks those).
        if key not in node:
            raise unknown_key_error(done, key, node.keys())
        node, done = node[key], f"{done}.{key}"


def define_config_flag(
    name: str = "config",
    help_string: str = "Experiment config file (configs/*.py[:arg]).",
    flag_values=None,
    sys_argv=None,
):
    """Defines `--<name>=file.py[:arg]` with `--<name>.key=value` overrides on every key of
    `default_config()`; returns the flag holder. `sys_argv`: the arguments the overrides are
    read from, when they are not `sys.argv` (ml_collections reads them there)."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    holder = config_flags.DEFINE_config_file(
        name, None, help_string, flag_values=fv, lock_config=True, sys_argv=sys_argv
    )
    flag = fv[name]
    flag.parser = _ConfigFileParser(name=name, lock_config=True)
    flag.parser.overrides = lambda: flag._GetOverrides(flag._GetArgv())
    return holder
