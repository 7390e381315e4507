"""`python -m vivit_jax.checkpoints.convert`: inspect and convert between formats."""

import ckpt_testlib as lib
import pytest
from flax import serialization

from vivit_jax import checkpoints
from vivit_jax.checkpoints import convert


@pytest.fixture(scope="module")
def model1():
    cfg = lib.vivit_config("spacetime", "token", layers=2)
    return cfg, lib.init_vivit(cfg, num_classes=4)[1]


@pytest.fixture
def scenic_file(tmp_path, model1):
    path = tmp_path / "checkpoint_100"
    lib.save_scenic_msgpack(path, model1[1])
    return path


def test_inspect(scenic_file, capsys):
    assert convert.main([f"--input={scenic_file}"]) == 0
    out = capsys.readouterr().out
    assert "format: scenic" in out and "kind: spacetime" in out
    assert '"hidden_size": 32' in out and '"num_layers": 2' in out and "classes: 4" in out


@pytest.mark.parametrize("to, name", [("orbax", "ckpts"), ("npz", "p.npz"), ("msgpack", "ck")])
def test_convert_round_trip(tmp_path, scenic_file, model1, to, name):
    out = tmp_path / name
    assert convert.main([f"--input={scenic_file}", f"--to={to}", f"--output={out}"]) == 0
    lib.assert_trees_equal(checkpoints.load_params(out), model1[1])


def test_convert_to_huggingface(tmp_path, scenic_file, model1):
    out = tmp_path / "hf"
    argv = [f"--input={scenic_file}", "--to=huggingface", f"--output={out}"]
    assert convert.main(argv) == 1  # Needs the input size.
    assert convert.main([*argv, "--num_frames=8", "--image_size=32"]) == 0
    cfg, num_classes, params = checkpoints.load_huggingface_vivit(out)
    lib.assert_trees_equal(params, model1[1])


def test_missing_input_is_a_clean_error(tmp_path, capsys):
    assert convert.main([f"--input={tmp_path / 'nothing'}"]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "variant, classifier, over",
    [
        ("factorized_encoder", "token", {}),
        ("factorized_encoder", "gap", {"attention_config.spatial_only_baseline": True}),
        ("factorized_self_attention_block", "gap", {}),
    ],
)
def test_infer_model_config(variant, classifier, over):
    cfg = lib.vivit_config(variant, classifier, layers=2, representation_size=16, **over)
    params = lib.init_vivit(cfg)[1]
    got = checkpoints.infer_model_config(params)
    assert got.attention_config.type == variant and got.classifier == classifier
    assert got.representation_size == 16 and tuple(got.patches.size) == (8, 8, 2)
    stack = got.spatial_transformer if variant == "factorized_encoder" else got
    assert (stack.num_layers, stack.num_heads, stack.mlp_dim) == (2, 2, 64)
    if over:
        assert got.attention_config.spatial_only_baseline
        assert "temporal_transformer" not in got


def test_msgpack_output_is_plain_flax(tmp_path, scenic_file):
    out = tmp_path / "ck"
    convert.convert(str(scenic_file), "msgpack", str(out))
    assert set(serialization.msgpack_restore(out.read_bytes())) == {"params"}
