"""A checkpoint that does not fit the model is reported as what does not fit: the size (with the
config key, both values, the parameter and both shapes), or the parameters a tree lacks."""

import re

import ckpt_testlib as lib
import numpy as np
import pytest

from vivit_jax import checkpoints
from vivit_jax.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def vit():
    """Image ViT: hidden 32, 2 heads, MLP 64, 8x8 patches, 2 layers, CLS token."""
    return lib.random_image_vit(seed=0, classifier="token", num_layers=2)[1]


def fine_tune(restored, cfg, video_shape=(1, 8, 32, 32, 3)):
    _, params = lib.init_vivit(cfg, video_shape=video_shape)
    config = lib.init_from_config(cfg)
    return checkpoints.init_from_pretrained(
        params, config, restored=restored, input_shape=video_shape[1:4]
    )


def test_width_is_named_not_the_kernel_inflation(vit, tmp_path):
    lib.save_vit_npz(tmp_path / "vit.npz", vit)
    cfg = lib.vivit_config(layers=2, hidden_size=64)
    _, params = lib.init_vivit(cfg)
    config = lib.init_from_config(cfg, checkpoint_path=str(tmp_path / "vit.npz"))
    with pytest.raises(CheckpointError) as e:
        checkpoints.init_from_pretrained(params, config, input_shape=(8, 32, 32))
    msg = str(e.value)
    assert "The checkpoint's hidden_size is 32 but config.model.hidden_size is 64" in msg
    assert "embedding/kernel: checkpoint (8, 8, 3, 32), model (2, 8, 8, 3, 64)" in msg
    assert "Set config.model.hidden_size=32" in msg and "tubelet" not in msg


SPACETIME = "config.model"
CASES = {
    "mlp_dim": (
        {"mlp_dim": 128},
        "The checkpoint's Transformer has mlp_dim 64, but config.model.mlp_dim is 128 "
        "(Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel: checkpoint (32, 64), model "
        "(32, 128)); set config.model.mlp_dim=64",
    ),
    "num_heads": (
        {"num_heads": 4},
        "The checkpoint's Transformer has num_heads 2, but config.model.num_heads is 4 "
        "(Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel: checkpoint "
        "(32, 2, 16), model (32, 4, 8)); set config.model.num_heads=2",
    ),
    "num_layers": (
        {"num_layers": 3},
        "The checkpoint's Transformer has 2 encoder blocks, the model's Transformer has 3 "
        "(config.model.num_layers=3); set config.model.num_layers=2",
    ),
    "patch size": (
        {"patches.size": (4, 4, 2)},
        "The checkpoint's patches are 8x8 but config.model.patches.size is (4, 4, 2) "
        "(embedding/kernel: checkpoint (8, 8, 3, 32), model (2, 4, 4, 3, 32)); a patch kernel is "
        "not resized: set config.model.patches.size to (8, 8, 2), or set "
        "config.init_from.restore_input_embedding=False",
    ),
    "factorised encoder mlp_dim": (
        {"variant": "factorized_encoder", "spatial_transformer.mlp_dim": 128},
        "The checkpoint's Transformer has mlp_dim 64, but "
        "config.model.spatial_transformer.mlp_dim is 128 (checkpoint "
        "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel (32, 64), model "
        "SpatialTransformer/encoderblock_0/MlpBlock_0/Dense_0/kernel (32, 128))",
    ),
    "factorised self-attention num_heads": (
        {"variant": "factorized_self_attention_block", "classifier": "gap", "num_heads": 4},
        "num_heads 2, but config.model.num_heads is 4 (checkpoint "
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel (32, 2, 16), "
        "model Transformer/encoderblock_0/MultiHeadDotProductAttention_space/query/kernel "
        "(32, 4, 8))",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_size_is_named(vit, case):
    over, want = CASES[case]
    over = dict(over)
    cfg = lib.vivit_config(
        over.pop("variant", "spacetime"), over.pop("classifier", "token"), layers=2, **over
    )
    with pytest.raises(CheckpointError, match=re.escape(want)):
        fine_tune(vit, cfg)


def test_video_checkpoint_sizes():
    """ViViT -> ViViT: tubelet depth, and the temporal encoder's depth of a Model 2."""
    _, video = lib.init_vivit(lib.vivit_config(t=2), seed=3)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "The checkpoint's tubelets span 2 frames but config.model.patches.size[2] is 4 "
            "(embedding/kernel: checkpoint (2, 8, 8, 3, 32), model (4, 8, 8, 3, 32))"
        ),
    ):
        fine_tune(video, lib.vivit_config(t=4))
    m2 = lib.vivit_config("factorized_encoder")
    _, m2_params = lib.init_vivit(m2, seed=4)
    deeper = lib.vivit_config("factorized_encoder", **{"temporal_transformer.num_layers": 2})
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "The checkpoint's TemporalTransformer has 1 encoder blocks, the model's "
            "TemporalTransformer has 2 (config.model.temporal_transformer.num_layers=2); set "
            "config.model.temporal_transformer.num_layers=1"
        ),
    ):
        fine_tune(m2_params, deeper)


def test_a_tree_with_wrong_names_is_named(vit):
    wrong = {"embedding": vit["embedding"], "Transformer": {"blocks": {"w": np.zeros(3)}}}
    with pytest.raises(
        CheckpointError,
        match=r"The checkpoint is not a complete ViT / ViViT: it lacks "
        r"Transformer/posembed_input/pos_embedding, Transformer/encoderblock_0, "
        r"Transformer/encoder_norm .*; it holds Transformer/blocks/w, embedding/bias, "
        r"embedding/kernel\.",
    ):
        fine_tune(wrong, lib.vivit_config(layers=2))
    block = lib.trees.to_numpy_tree(vit)
    block["Transformer"]["encoderblock_0"] = {"Dense": {"kernel": np.zeros((2, 2))}}
    with pytest.raises(CheckpointError, match=r"encoderblock_0 holds \['Dense'\]"):
        checkpoints.infer_model_config(block)
