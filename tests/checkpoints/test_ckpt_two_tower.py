"""big_vision two-tower checkpoints (SigLIP / LiT): the image tower `params/img/` is read, with or
without big_vision's sub-tree syntax `file.npz:img`, and fine-tunes exactly as the same tower
saved alone."""

import logging

import ckpt_testlib as lib
import numpy as np
import pytest

from vivit_jax import checkpoints
from vivit_jax.checkpoints import CheckpointError, convert, loading


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    """(directory, image tower): `two.npz` (two-tower) and `alone.npz` (the tower alone), both in
    big_vision's layout; `two_scan.npz` with the encoder blocks scanned."""
    root = tmp_path_factory.mktemp("two_tower")
    tower = lib.siglip_image_tower()
    lib.save_two_tower_npz(root / "two.npz", tower)
    lib.save_two_tower_npz(root / "two_scan.npz", tower, scan=True)
    lib.save_big_vision_npz(root / "alone.npz", tower, prefix="params/")
    return root, tower


@pytest.mark.parametrize("name", ["two.npz", "two.npz:img", "two_scan.npz", "two_scan.npz:img/"])
def test_image_tower_reads_as_the_tower_alone(siglip, name):
    root, tower = siglip
    with np.load(root / "two.npz") as f:  # The file really is a two-tower checkpoint.
        assert {"params/t", "params/txt/head/kernel", "params/img/MAPHead_0/probe"} <= set(f.files)
    got = checkpoints.load_params(f"{root / name}")
    lib.assert_trees_equal(got, checkpoints.load_params(root / "alone.npz"))
    np.testing.assert_array_equal(got["embedding"]["kernel"], tower["embedding"]["kernel"])
    assert "MAPHead_0" in got and "txt" not in got


@pytest.mark.parametrize("name", ["two.npz", "two.npz:img"])
def test_fine_tuning_equals_the_tower_alone(siglip, name, caplog):
    root, tower = siglip
    cfg = lib.vivit_config("spacetime", "token", layers=2)
    _, params = lib.init_vivit(cfg)
    config = lib.init_from_config(cfg, checkpoint_path=str(root / "alone.npz"))
    want = checkpoints.init_from_pretrained(params, config, input_shape=(8, 32, 32))
    config.init_from.checkpoint_path = str(root / name)
    with caplog.at_level(logging.INFO):
        got = checkpoints.init_from_pretrained(params, config, input_shape=(8, 32, 32))
    lib.assert_trees_equal(got, want)
    # The tower's weights were used (central frame of the tubelet kernel, encoder blocks).
    np.testing.assert_array_equal(got["embedding"]["kernel"][1], tower["embedding"]["kernel"])
    block = ("Transformer", "encoderblock_1", "MlpBlock_0", "Dense_0", "kernel")
    np.testing.assert_array_equal(lib.trees.get_path(got, block), lib.trees.get_path(tower, block))
    table = next(r.getMessage() for r in caplog.records if "parameter" in r.getMessage())
    assert "MAPHead_0/probe" in table and "not used (big_vision MAP-pooling head)" in table


def test_lit_tower_head_is_a_new_head(tmp_path):
    """LiT's image tower has a `head` (to the shared embedding): reset, as any ViT's head."""
    _, tower = lib.random_image_vit(seed=3, classifier="token")
    lib.save_two_tower_npz(tmp_path / "lit.npz", tower)
    cfg = lib.vivit_config("spacetime", "token", layers=2)
    _, params = lib.init_vivit(cfg)
    restored = checkpoints.load_params(tmp_path / "lit.npz")
    new, changes = checkpoints.inflate_params(
        params, restored, cfg, checkpoints.resolve_init_from(None), input_shape=(8, 32, 32)
    )
    assert not np.any(new["output_projection"]["kernel"])
    assert {c.action for c in changes if c.path.startswith("output_projection")} >= {
        "not used (new head)"
    }


def test_sub_tree_syntax_everywhere(siglip, capsys, monkeypatch):
    root, _ = siglip
    monkeypatch.chdir(root)
    assert checkpoints.detect_format("two.npz:img") == ("vit", "two.npz:img")
    ckpt = loading.load_checkpoint("two.npz:img")
    lib.assert_trees_equal(ckpt.params, checkpoints.load_params("alone.npz"))
    assert convert.main(["--input=two.npz:img"]) == 0
    out = capsys.readouterr().out
    assert "kind: image" in out and "MAPHead_0: big_vision's MAP-pooling head" in out
    assert '"hidden_size": 32' in out and '"num_layers": 2' in out


def test_missing_sub_tree_and_several_models(siglip, tmp_path):
    root, tower = siglip
    with pytest.raises(CheckpointError, match=r"no sub-tree 'image'.*\['b', 'img', 't', 'txt'\]"):
        checkpoints.load_params(f"{root / 'two.npz'}:image")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoints.load_params(f"{root / 'nothing.npz'}:img")
    flat = lib.big_vision_flat(tower, prefix="params/student/")
    flat.update(lib.big_vision_flat(tower, prefix="params/teacher/"))
    np.savez(tmp_path / "distill.npz", **flat)
    with pytest.raises(
        CheckpointError, match=r"several models \(\['student', 'teacher'\]\).*distill.npz:student"
    ):
        checkpoints.load_params(tmp_path / "distill.npz")
    lib.assert_trees_equal(
        checkpoints.load_params(f"{tmp_path / 'distill.npz'}:teacher"),
        checkpoints.load_params(root / "alone.npz"),
    )


def test_a_colon_in_an_existing_name_is_not_a_sub_tree(siglip, tmp_path):
    root, _ = siglip
    path = tmp_path / "run:img"
    path.write_bytes((root / "alone.npz").read_bytes())
    lib.assert_trees_equal(
        checkpoints.load_params(path), checkpoints.load_params(root / "alone.npz")
    )
