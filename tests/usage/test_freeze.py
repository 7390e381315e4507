"""Frozen-backbone fine-tuning: frozen parameters stay bit-identical through training, have no
optimiser state, and the config keys are checked."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.training.conftest import make_dataset, tiny_config
from vivit_jax import config_lib, experiment, optim, sharding, train
from vivit_jax.checkpoints import fingerprint, trees


def _initial_params(config):
    config = config_lib.complete_config(config)
    mesh = sharding.create_mesh(1)
    exp = experiment.build_experiment(
        config, mesh=mesh, dataset=make_dataset(config, mesh=mesh, start_step=0)
    )
    return jax.device_get(experiment.initial_state(exp).params), exp


def _changed(before, after) -> set[str]:
    b, a = trees.flatten(before), trees.flatten(after)
    assert b.keys() == a.keys()
    return {"/".join(p) for p in b if not np.array_equal(np.asarray(b[p]), np.asarray(a[p]))}


def test_only_the_head_and_the_last_block_train(tmp_path):
    config = tiny_config(**{"model.num_layers": 2, "freeze.backbone": True})
    config.freeze.train_last_blocks = 1
    before, _ = _initial_params(config)
    result = train.train_and_evaluate(config, str(tmp_path / "work"), dataset_fn=make_dataset)
    assert result.step == 6
    changed = _changed(before, jax.device_get(result.state.params))
    trained = ("Transformer/encoderblock_1/", "Transformer/encoder_norm/", "output_projection/")
    assert {p for p in changed if not p.startswith(trained)} == set()  # Frozen: bit-identical.
    assert "output_projection/kernel" in changed
    assert any(p.startswith("Transformer/encoderblock_1/") for p in changed)
    assert "Transformer/encoder_norm/scale" in changed
    # The checkpoint (its optimiser state has empty nodes for frozen leaves) restores.
    again = train.train_and_evaluate(config, str(tmp_path / "work"), dataset_fn=make_dataset)
    assert again.step == 6 and _changed(result.state.params, again.state.params) == set()


def _opt_state_size(config):
    _, exp = _initial_params(config)
    leaves = jax.tree.leaves(exp.abstract_state.opt_state)
    return len(leaves), sum(x.size * x.dtype.itemsize for x in leaves)


def test_frozen_parameters_have_no_optimiser_state():
    full = _opt_state_size(tiny_config(**{"model.num_layers": 2}))
    probe = _opt_state_size(tiny_config(**{"model.num_layers": 2, "freeze.backbone": True}))
    params, _ = _initial_params(tiny_config(**{"model.num_layers": 2}))
    head = params["output_projection"]
    head_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(head))
    # Adam keeps two moments per trained leaf, plus step counters.
    assert probe[0] < full[0] and probe[0] <= 2 * len(jax.tree.leaves(head)) + 4
    assert probe[1] <= 2 * head_bytes + 64 < full[1] / 10


def test_model2_blocks_are_counted_from_the_end_of_the_network():
    config = config_lib.complete_config(
        tiny_config(
            **{
                "model.attention_config.type": "factorized_encoder",
                "model.classifier": "token",
                "model.spatial_transformer.num_layers": 3,
                "model.temporal_transformer.num_layers": 2,
                "freeze.backbone": True,
            }
        )
    )
    config.unlock()
    config.freeze.train_last_blocks = 3  # Both temporal blocks and the last spatial one.
    params, _ = _initial_params(config)
    labels = trees.flatten(optim.freeze_labels(params, config))
    trainable = {"/".join(p[:2]) for p, v in labels.items() if v == optim.TRAINABLE}
    assert trainable == {
        "TemporalTransformer/encoderblock_0",
        "TemporalTransformer/encoderblock_1",
        "TemporalTransformer/encoder_norm",
        "SpatialTransformer/encoderblock_2",
        "SpatialTransformer/encoder_norm",
        "output_projection/kernel",
        "output_projection/bias",
    }
    assert labels[("cls_TemporalTransformer",)] == optim.FROZEN


@pytest.mark.parametrize(
    "freeze, message",
    [
        ({"backbone": True, "train_last_blocks": 2}, "train_last_blocks=2 exceeds the model's 1"),
        ({"train_last_blocks": 1}, "train_last_blocks=1 needs config.freeze.backbone=True"),
        ({"train_last_blocks": -1}, "config.freeze.train_last_blocks must be an integer >= 0"),
        ({"backbone": 1}, "config.freeze.backbone must be True or False"),
    ],
)
def test_bad_freeze_values_name_the_key(freeze, message):
    config = tiny_config()
    with config.freeze.ignore_type():
        config.freeze.update(freeze)
    with pytest.raises(ValueError, match=message):
        config_lib.complete_config(config)


def test_freeze_is_part_of_the_fingerprint():
    keys = fingerprint.config_fingerprint(config_lib.complete_config(tiny_config()))
    assert keys["freeze.backbone"] == "false" and keys["freeze.train_last_blocks"] == "0"
