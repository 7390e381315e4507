"""FSDP-style sharding splits ViViT-L's parameters and optimiser state over the devices.

Per-device bytes come from the shardings (nothing of ViViT-L's 300M parameters is allocated) and,
for a ViViT-L-wide model with one layer, from the arrays actually placed on the 8 CPU devices.
That FSDP training equals the replicated run is tests/training/test_steps.py::
test_same_losses_as_one_device (the 4 x 2 mesh case).
"""

import dataclasses

import jax
import pytest

from tests.training.conftest import tiny_config
from vivit_jax import config_lib, experiment, sharding


@dataclasses.dataclass
class _Meta:
    meta_data: dict


def _experiment(num_layers, model_axis_size, devices=8):
    config = tiny_config(
        **{
            "model.hidden_size": 1024,  # ViViT-L (models/config.py SIZES['L']).
            "model.num_heads": 16,
            "model.mlp_dim": 4096,
            "model.num_layers": num_layers,
            "model.patches.size": (16, 16, 2),
            "model.classifier": "token",
            "optimizer": "adamw",
            "sharding.model_axis_size": model_axis_size,
        }
    )
    config = config_lib.complete_config(config)
    mesh = sharding.create_mesh(model_axis_size, devices=jax.devices()[:devices])
    meta = {"num_classes": 400, "input_shape": (32, 224, 224, 3), "num_train_examples": 1000}
    return experiment.build_experiment(config, mesh=mesh, dataset=_Meta(meta))


@pytest.mark.parametrize("model_axis_size", [8, 4])
def test_vivit_large_state_is_split_over_the_model_axis(model_axis_size):
    exp = _experiment(num_layers=24, model_axis_size=model_axis_size)
    total, per_device = sharding.per_device_bytes(exp.abstract_state, exp.state_shardings)
    params = sum(x.size for x in jax.tree.leaves(exp.abstract_state.params))
    print(
        f"ViViT-L/16x2, {params / 1e6:.1f} M params, AdamW: state {total / 2**30:.2f} GiB, "
        f"{per_device / 2**30:.3f} GiB per device with model_axis_size={model_axis_size}"
    )
    assert 300e6 < params < 320e6
    assert total / model_axis_size <= per_device < 1.01 * total / model_axis_size
    replicated = _experiment(num_layers=24, model_axis_size=1)
    assert sharding.per_device_bytes(replicated.abstract_state, replicated.state_shardings) == (
        total,
        total,
    )


def test_placed_arrays_use_a_eighth_per_device():
    exp = _experiment(num_layers=1, model_axis_size=8)
    state = experiment.initial_state(exp)
    per_device = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    print(
        f"1-layer ViViT-L: state {total / 2**20:.1f} MiB, per device {max(per_device.values()) / 2**20:.1f} MiB"
    )
    assert len(per_device) == 8
    assert max(per_device.values()) < 1.02 * total / 8
    assert sharding.per_device_bytes(exp.abstract_state, exp.state_shardings) == (
        total,
        max(per_device.values()),
    )
