"""Checksums of a train state's arrays, computed where the arrays live (on the devices).

A checkpoint's `meta` stores the checksum of every array it holds; a restore recomputes them
from the restored arrays and compares. Any change to the stored bytes that the readers do not
catch themselves (a flipped bit in a parameter or optimiser-state file decodes to a different
number) is found this way, whatever the file layout, on any number of hosts.

Each array's checksum is two 32-bit sums of its bit patterns: the plain sum, and the sum
weighted by odd position weights (so moved values count too). Any single flipped bit changes
both. Computed by one jitted reduction over the (sharded) arrays, it costs one pass over the
state on the accelerator, against the copy to host memory that a save makes anyway.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16}


def _leaf_checksum(x: jax.Array) -> jax.Array:
    x = jnp.ravel(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = np.dtype(x.dtype).itemsize
    if size >= 4:  # 8-byte values become two 32-bit words.
        bits = jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))
    else:
        bits = jax.lax.bitcast_convert_type(x, _UNSIGNED[size]).astype(jnp.uint32)
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)])


@functools.lru_cache(maxsize=8)
def _checksum_fn(out_sharding):
    return jax.jit(lambda leaves: [_leaf_checksum(x) for x in leaves], out_shardings=out_sharding)


def key_path(path) -> str:
    """'params/Transformer/encoder_norm/bias' for a `jax.tree_util` key path."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "/".join(parts)


def tree_checksums(tree, prefix: str = "") -> dict[str, list[int]]:
    """`{'<prefix>/<path>': [sum, weighted sum]}` for every array leaf of `tree`.

    Every process of a multi-host run must call it with the same (global) arrays.
    """
    with_paths = jax.tree.leaves_with_path(tree)
    if not with_paths:
        return {}
    names = [f"{prefix}/{key_path(p)}" if prefix else key_path(p) for p, _ in with_paths]
    leaves = [jnp.asarray(x) if not isinstance(x, jax.Array) else x for _, x in with_paths]
    first = leaves[0].sharding
    out = NamedSharding(first.mesh, PartitionSpec()) if isinstance(first, NamedSharding) else None
    sums = jax.device_get(_checksum_fn(out)(leaves))
    return {name: [int(a), int(b)] for name, (a, b) in zip(names, sums)}


def state_checksums(state, *, params_only: bool = False) -> dict[str, list[int]]:
    """Checksums of a `TrainState`'s arrays, keyed 'step', 'params/...', 'opt_state/...'."""
    fields = ("step", "params") if params_only else ("step", "params", "opt_state")
    out = {}
    for field in fields:
        out.update(tree_checksums(getattr(state, field), prefix=field))
    return out


def mismatches(stored: dict, computed: dict) -> list[str]:
    """Names of the arrays whose checksums differ (or that one side lacks)."""
    return sorted(k for k in set(stored) | set(computed) if stored.get(k) != computed.get(k))
