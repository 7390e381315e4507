"""The device mesh and the shardings of the batch and the train state.

One mesh with axes `('data', 'model')` serves 1 CPU, 1 GPU, many devices and many hosts.
Batches are split over 'data' (the data package places them so). With
`config.sharding.model_axis_size = m > 1`, every array of the train state with at least
`config.sharding.fsdp_min_size` elements is split over 'model' along its largest axis divisible
by m (FSDP-style: XLA gathers a layer's weights where they are used); inside the step the batch is
split over both axes, so the 'model' devices do not repeat each other's work. Everything else is
replicated.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA, MODEL = "data", "model"


def create_mesh(model_axis_size: int = 1, devices=None) -> Mesh:
    """A `('data', 'model')` mesh over all (global) devices.

    Raises:
      ValueError: if the number of devices is not divisible by `model_axis_size`.
    """
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) % model_axis_size:
        raise ValueError(
            f"config.sharding.model_axis_size={model_axis_size} does not divide the "
            f"{len(devices)} devices."
        )
    # Devices of one process stay together on 'data', so each host feeds a contiguous slice.
    grid = np.array(devices).reshape(len(devices) // model_axis_size, model_axis_size)
    return Mesh(grid, (DATA, MODEL))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over 'data'; what the data package delivers."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def compute_batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch axis over every device (used inside the step)."""
    if mesh.shape[MODEL] == 1:
        return NamedSharding(mesh, PartitionSpec(DATA))
    return NamedSharding(mesh, PartitionSpec((DATA, MODEL)))


def fsdp_spec(shape, model_axis_size: int, min_size: int) -> PartitionSpec:
    """Splits the largest axis divisible by `model_axis_size` over 'model' (ties: the last)."""
    if model_axis_size == 1 or int(np.prod(shape)) < min_size:
        return PartitionSpec()
    candidates = [i for i, d in enumerate(shape) if d % model_axis_size == 0]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda i: (shape[i], i))
    spec = [None] * len(shape)
    spec[axis] = MODEL
    return PartitionSpec(*spec)


def state_shardings(abstract_state, mesh: Mesh, min_size: int):
    """Shardings for every leaf of a (shape-only) train state.

    Optimiser moments have their parameter's shape and so get its sharding.
    """
    m = mesh.shape[MODEL]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(x.shape, m, min_size)), abstract_state
    )


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "config.batch_size") -> None:
    """Raises a ValueError when the global batch does not split evenly over the devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"{name}={batch_size} is not divisible by the {n} devices "
            f"({jax.process_count()} process(es)); use a multiple of {n}."
        )


def abstract_like(tree, shardings):
    """`jax.ShapeDtypeStruct`s of `tree` (arrays or structs) placed as `shardings`."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def per_device_bytes(abstract_state, shardings) -> tuple[int, int]:
    """`(total, largest per device)` bytes of a state placed with `shardings`."""
    total, per_device = 0, {}
    for x, s in zip(jax.tree.leaves(abstract_state), jax.tree.leaves(shardings)):
        itemsize = np.dtype(x.dtype).itemsize
        total += int(np.prod(x.shape)) * itemsize
        for device, index in s.devices_indices_map(tuple(x.shape)).items():
            shard = [len(range(*i.indices(d))) for i, d in zip(index, x.shape)]
            per_device[device] = per_device.get(device, 0) + int(np.prod(shard)) * itemsize
    return total, max(per_device.values(), default=0)
