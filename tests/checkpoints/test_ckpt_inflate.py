"""Inflation as a pure function on trees: exact kernels, positional embeddings, CLS, heads,
video -> video fine-tuning, and errors that name the parameter and both shapes."""

import copy
import logging

import ckpt_testlib as lib
import numpy as np
import pytest
import scipy.ndimage

from vivit_jax import checkpoints
from vivit_jax.checkpoints import CheckpointError

POS = ("Transformer", "posembed_input", "pos_embedding")


@pytest.fixture(scope="module")
def vit_token():
    return lib.random_image_vit(seed=0, classifier="token", num_layers=1)[1]


@pytest.fixture(scope="module")
def vit_gap():
    return lib.random_image_vit(seed=1, classifier="gap", num_layers=1)[1]


def inflate(restored, cfg, video_shape=(1, 8, 32, 32, 3), num_classes=5, **init_from):
    _, target = lib.init_vivit(cfg, num_classes=num_classes, video_shape=video_shape)
    new, changes = checkpoints.inflate_params(
        target,
        restored,
        cfg,
        checkpoints.resolve_init_from(init_from),
        input_shape=video_shape[1:4],
    )
    return target, new, changes


def get(tree, path):
    return lib.trees.get_path(tree, path)


# ------------------------------------------------------------------------------------------
# Tubelet kernels.


@pytest.mark.parametrize("t", [2, 3])
def test_central_frame_inflation_is_exact(vit_token, t):
    cfg = lib.vivit_config(t=t)
    _, new, _ = inflate(vit_token, cfg, video_shape=(1, 3 * t, 32, 32, 3))
    kernel, k2d = new["embedding"]["kernel"], vit_token["embedding"]["kernel"]
    assert kernel.shape == (t, *k2d.shape)
    np.testing.assert_array_equal(kernel[t // 2], k2d)
    others = [i for i in range(t) if i != t // 2]
    assert not np.any(kernel[others])
    np.testing.assert_array_equal(new["embedding"]["bias"], vit_token["embedding"]["bias"])


def test_average_inflation_is_exact(vit_token):
    cfg = lib.vivit_config(
        **{"temporal_encoding_config.kernel_init_method": "average_frame_initializer"}
    )
    _, new, _ = inflate(vit_token, cfg)
    k2d = vit_token["embedding"]["kernel"]
    for i in range(2):
        np.testing.assert_allclose(new["embedding"]["kernel"][i], k2d / 2, rtol=1e-7)


def test_frame_sampling_copies_the_2d_kernel(vit_token):
    cfg = lib.vivit_config(
        **{
            "temporal_encoding_config.method": "temporal_sampling",
            "temporal_encoding_config.n_sampled_frames": 3,
        }
    )
    _, new, _ = inflate(vit_token, cfg)
    np.testing.assert_array_equal(new["embedding"]["kernel"], vit_token["embedding"]["kernel"])
    pe = get(vit_token, POS)
    np.testing.assert_array_equal(get(new, POS), np.concatenate([pe] + [pe[:, 1:]] * 2, axis=1))


def test_missing_kernel_init_method_is_an_error(vit_token):
    cfg = lib.vivit_config(**{"temporal_encoding_config.kernel_init_method": None})
    with pytest.raises(CheckpointError, match="kernel_init_method=None"):
        inflate(vit_token, cfg)


# ------------------------------------------------------------------------------------------
# Positional embeddings.


def scenic_resize(grid_tokens, gs_new):
    """Scenic's interpolate_positional_embeddings on a square (N, D) grid."""
    gs = int(np.sqrt(len(grid_tokens)))
    grid = grid_tokens.reshape(gs, gs, -1)
    return scipy.ndimage.zoom(grid, (gs_new / gs, gs_new / gs, 1), order=1).reshape(gs_new**2, -1)


def test_tile_repeats_image_grid_over_time_frame_major(vit_token):
    _, new, _ = inflate(vit_token, lib.vivit_config(), positional_embed_size_change="tile")
    pe = get(vit_token, POS)
    got = get(new, POS)
    np.testing.assert_array_equal(got[:, :1], pe[:, :1])
    np.testing.assert_array_equal(got[0, 1:].reshape(4, 16, -1), np.tile(pe[0, 1:], (4, 1, 1)))


def test_resize_tile_matches_scenic_resize_bit_for_bit(vit_token):
    # 32 -> 48 px: 4x4 -> 6x6 grid, and 8 frames / t=2 -> 4 time steps.
    _, new, changes = inflate(vit_token, lib.vivit_config(), video_shape=(1, 8, 48, 48, 3))
    pe = get(vit_token, POS)
    want = np.tile(scenic_resize(pe[0, 1:], 6), (4, 1))
    np.testing.assert_array_equal(get(new, POS)[0, 1:], want)
    np.testing.assert_array_equal(get(new, POS)[:, :1], pe[:, :1])
    row = next(c for c in changes if c.path == "Transformer/posembed_input/pos_embedding")
    assert "resized 4x4->6x6" in row.action and "tiled over 4 frames" in row.action


def test_tile_refuses_a_spatial_change(vit_token):
    with pytest.raises(
        CheckpointError, match=r"4x4 -> 6x6.*\(1, 17, 32\).*\(1, 145, 32\).*resize_tile"
    ):
        inflate(
            vit_token,
            lib.vivit_config(),
            video_shape=(1, 8, 48, 48, 3),
            positional_embed_size_change="tile",
        )


def test_resize_refuses_to_invent_time(vit_token):
    with pytest.raises(CheckpointError, match="repeated over 4 frames"):
        inflate(vit_token, lib.vivit_config(), positional_embed_size_change="resize")


def test_ambiguous_grid_without_input_shape_is_an_error(vit_token):
    cfg = lib.vivit_config()
    _, target = lib.init_vivit(cfg, video_shape=(1, 8, 48, 48, 3))
    with pytest.raises(CheckpointError, match="pass input_shape"):
        checkpoints.inflate_params(target, vit_token, cfg, checkpoints.resolve_init_from(None))
    # 'tile' keeps the frame size, so the grid is known.
    _, target = lib.init_vivit(cfg)
    init_from = checkpoints.resolve_init_from({"positional_embed_size_change": "tile"})
    checkpoints.inflate_params(target, vit_token, cfg, init_from)


def test_restore_positional_embedding_false_keeps_init(vit_token):
    target, new, _ = inflate(vit_token, lib.vivit_config(), restore_positional_embedding=False)
    np.testing.assert_array_equal(get(new, POS), get(target, POS))


# ------------------------------------------------------------------------------------------
# CLS tokens, every classifier pairing.


@pytest.mark.parametrize("ckpt", ["token", "gap"])
@pytest.mark.parametrize("model", ["token", "gap"])
def test_model1_cls_pairings(vit_token, vit_gap, ckpt, model):
    vit = vit_token if ckpt == "token" else vit_gap
    target, new, _ = inflate(vit, lib.vivit_config(classifier=model))
    grid = get(vit, POS)[:, 1:] if ckpt == "token" else get(vit, POS)
    got = get(new, POS)
    np.testing.assert_array_equal(got[:, -64:], np.tile(grid, (1, 4, 1)))
    if model == "token":
        want_cls = vit["cls"] if ckpt == "token" else target["cls"]
        want_row = get(vit, POS)[:, :1] if ckpt == "token" else get(target, POS)[:, :1]
        np.testing.assert_array_equal(new["cls"], want_cls)
        np.testing.assert_array_equal(got[:, :1], want_row)
    else:
        assert "cls" not in new and got.shape[1] == 64


def test_model2_takes_cls_and_spatial_encoder_from_the_image(vit_token):
    cfg = lib.vivit_config("factorized_encoder", "token")
    target, new, changes = inflate(vit_token, cfg)
    np.testing.assert_array_equal(new["cls_SpatialTransformer"], vit_token["cls"])
    np.testing.assert_array_equal(
        get(new, ("SpatialTransformer", "posembed_input", "pos_embedding")), get(vit_token, POS)
    )
    lib.assert_trees_equal(
        new["SpatialTransformer"]["encoderblock_0"], vit_token["Transformer"]["encoderblock_0"]
    )
    # The temporal encoder and its CLS start from the model's initialisation.
    lib.assert_trees_equal(new["TemporalTransformer"], target["TemporalTransformer"])
    np.testing.assert_array_equal(new["cls_TemporalTransformer"], target["cls_TemporalTransformer"])
    kept = {c.path for c in changes if c.action == "kept initialisation"}
    assert "cls_TemporalTransformer" in kept


def test_model3_block_mapping_and_temporal_init(vit_gap):
    cfg = lib.vivit_config("factorized_self_attention_block", "gap")
    target, new, _ = inflate(vit_gap, cfg)
    src, blk = vit_gap["Transformer"]["encoderblock_0"], new["Transformer"]["encoderblock_0"]
    lib.assert_trees_equal(
        blk["MultiHeadDotProductAttention_space"], src["MultiHeadDotProductAttention_0"]
    )
    lib.assert_trees_equal(blk["LayerNorm_space"], src["LayerNorm_0"])
    lib.assert_trees_equal(blk["LayerNorm_mlp"], src["LayerNorm_1"])
    lib.assert_trees_equal(blk["MlpBlock"], src["MlpBlock_0"])
    att = blk["MultiHeadDotProductAttention_time"]
    assert not np.any(att["out"]["kernel"]) and not np.any(att["out"]["bias"])
    # q/k/v stay random (trainable, not stuck at zero).
    tgt_att = target["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_time"]
    np.testing.assert_array_equal(att["query"]["kernel"], tgt_att["query"]["kernel"])
    assert np.any(att["query"]["kernel"])

    _, copied, _ = inflate(vit_gap, cfg, temporal_attention_init="copy_spatial")
    lib.assert_trees_equal(
        copied["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_time"],
        src["MultiHeadDotProductAttention_0"],
    )


# ------------------------------------------------------------------------------------------
# Heads.


def test_head_is_reset_and_can_be_restored(vit_token):
    _, new, _ = inflate(vit_token, lib.vivit_config(), num_classes=7)
    assert new["output_projection"]["kernel"].shape == (32, 7)
    assert not np.any(new["output_projection"]["kernel"]) and not np.any(
        new["output_projection"]["bias"]
    )
    _, kept, _ = inflate(
        vit_token, lib.vivit_config(), num_classes=10, restore_output_projection=True
    )
    lib.assert_trees_equal(kept["output_projection"], vit_token["output_projection"])
    with pytest.raises(
        CheckpointError, match=r"output_projection/kernel: checkpoint \(32, 10\).*model \(32, 7\)"
    ):
        inflate(vit_token, lib.vivit_config(), num_classes=7, restore_output_projection=True)


@pytest.mark.parametrize(
    "ckpt_rep, model_rep, kept",
    [(16, 16, True), (16, 24, False), (16, None, False), (None, 16, False)],
)
def test_pre_logits(ckpt_rep, model_rep, kept):
    vit = lib.random_image_vit(classifier="token", num_layers=1, representation_size=ckpt_rep)[1]
    cfg = lib.vivit_config(representation_size=model_rep)
    target, new, changes = inflate(vit, cfg)
    if model_rep is None:
        assert "pre_logits" not in new
        assert any(
            c.path.startswith("pre_logits") and "not used" in c.action for c in changes
        ) == bool(ckpt_rep)
    elif kept:
        lib.assert_trees_equal(new["pre_logits"], vit["pre_logits"])
    else:
        lib.assert_trees_equal(new["pre_logits"], target["pre_logits"])


# ------------------------------------------------------------------------------------------
# Video -> video fine-tuning.


@pytest.fixture(scope="module")
def vivit_k(vit_token):
    """A "released" Model 1: 8 frames of 32x32 (4x4x4 tokens), 10 classes."""
    return inflate(vit_token, lib.vivit_config(), num_classes=10)[1]


def test_same_input_new_dataset(vivit_k):
    _, new, _ = inflate(vivit_k, lib.vivit_config(), num_classes=3)
    np.testing.assert_array_equal(get(new, POS), get(vivit_k, POS))
    np.testing.assert_array_equal(new["embedding"]["kernel"], vivit_k["embedding"]["kernel"])
    assert new["output_projection"]["kernel"].shape == (32, 3)


def test_more_frames(vivit_k):
    # 8 -> 16 frames (4 -> 8 time steps); the checkpoint's grid is inferred (same frame size).
    _, new, _ = inflate(vivit_k, lib.vivit_config(), video_shape=(1, 16, 32, 32, 3))
    pe = get(vivit_k, POS)[0, 1:].reshape(4, -1)
    want = scipy.ndimage.zoom(pe, (2, 1), order=1).reshape(1, 8 * 16, -1)
    np.testing.assert_allclose(get(new, POS)[:, 1:], want, rtol=1e-6)


def test_more_frames_and_higher_resolution(vivit_k):
    # 8 -> 16 frames (4 -> 8 time steps) and 32 -> 48 px (4x4 -> 6x6): the checkpoint's 64
    # tokens could be 4x4x4 or 1x8x8, so its grid must be given.
    with pytest.raises(CheckpointError, match="checkpoint_token_grid"):
        inflate(vivit_k, lib.vivit_config(), video_shape=(1, 16, 48, 48, 3))
    _, new, changes = inflate(
        vivit_k, lib.vivit_config(), video_shape=(1, 16, 48, 48, 3), checkpoint_token_grid=(4, 4, 4)
    )
    pe = get(vivit_k, POS)
    grid = np.stack([scenic_resize(f, 6) for f in pe[0, 1:].reshape(4, 16, -1)])  # (4, 36, D)
    want = scipy.ndimage.zoom(grid.reshape(4, -1), (2, 1), order=1).reshape(1, 8 * 36, -1)
    np.testing.assert_allclose(get(new, POS)[:, 1:], want, rtol=1e-6)
    np.testing.assert_array_equal(get(new, POS)[:, :1], pe[:, :1])
    # Linear interpolation keeps the end frames exactly.
    np.testing.assert_allclose(get(new, POS)[0, 1:37], grid[0], rtol=1e-6)


def test_factorised_encoder_video_to_video(vit_token):
    cfg = lib.vivit_config("factorized_encoder", "token")
    ckpt = inflate(vit_token, cfg, num_classes=10)[1]
    _, new, _ = inflate(ckpt, cfg, video_shape=(1, 16, 48, 48, 3))
    t_pe = get(ckpt, ("TemporalTransformer", "posembed_input", "pos_embedding"))
    want = scipy.ndimage.zoom(t_pe[0, 1:], (2, 1), order=1)
    got = get(new, ("TemporalTransformer", "posembed_input", "pos_embedding"))
    np.testing.assert_allclose(got[0, 1:], want, rtol=1e-6)
    np.testing.assert_array_equal(got[:, :1], t_pe[:, :1])
    s_pe = get(ckpt, ("SpatialTransformer", "posembed_input", "pos_embedding"))
    np.testing.assert_array_equal(
        get(new, ("SpatialTransformer", "posembed_input", "pos_embedding"))[0, 1:],
        scenic_resize(s_pe[0, 1:], 6),
    )
    lib.assert_trees_equal(
        new["TemporalTransformer"]["encoderblock_0"], ckpt["TemporalTransformer"]["encoderblock_0"]
    )


# ------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    "ckpt_variant, model_variant",
    [
        ("spacetime", "factorized_encoder"),
        ("factorized_encoder", "spacetime"),
        ("factorized_self_attention_block", "spacetime"),
        ("spacetime", "factorized_self_attention_block"),
    ],
)
def test_video_checkpoint_of_another_variant(vit_gap, ckpt_variant, model_variant):
    ckpt = inflate(vit_gap, lib.vivit_config(ckpt_variant, "gap"))[1]
    with pytest.raises(
        CheckpointError,
        match=f"checkpoint is a {ckpt_variant} ViViT but the model is {model_variant}",
    ):
        inflate(ckpt, lib.vivit_config(model_variant, "gap"))


def test_model1_and_model4_share_parameters(vit_gap):
    ckpt = inflate(vit_gap, lib.vivit_config("spacetime", "gap"))[1]
    _, new, _ = inflate(ckpt, lib.vivit_config("factorized_dot_product_attention", "gap"))
    lib.assert_trees_equal(new["Transformer"], ckpt["Transformer"])


def test_wrong_shape_names_parameter_and_both_shapes(vit_token):
    bad = copy.deepcopy(vit_token)
    block = bad["Transformer"]["encoderblock_0"]["MlpBlock_0"]["Dense_0"]
    block["kernel"] = np.zeros((32, 48), np.float32)
    before = copy.deepcopy(bad)
    cfg = lib.vivit_config()
    _, target = lib.init_vivit(cfg)
    target_before = copy.deepcopy(target)
    with pytest.raises(
        CheckpointError,
        match=r"Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel: checkpoint \(32, 48\).*model \(32, 64\)",
    ):
        checkpoints.inflate_params(
            target, bad, cfg, checkpoints.resolve_init_from(None), input_shape=(8, 32, 32)
        )
    # Nothing half-loaded: both inputs are untouched.
    lib.assert_trees_equal(bad, before)
    lib.assert_trees_equal(target, target_before)


def test_depth_mismatch(vit_token):
    with pytest.raises(
        CheckpointError, match="Transformer has 1 encoder blocks, the model's Transformer has 2"
    ):
        inflate(vit_token, lib.vivit_config(layers=2))


def test_hidden_size_mismatch():
    cfg = lib.vivit_config()
    _, other = lib.init_vivit(lib.vivit_config(**{"hidden_size": 64, "num_heads": 2}))
    with pytest.raises(
        CheckpointError, match=r"embedding/kernel.*\(2, 8, 8, 3, 64\).*\(2, 8, 8, 3, 32\)"
    ):
        inflate(other, cfg)


def test_patch_size_mismatch(vit_token):
    cfg = lib.vivit_config(**{"patches.size": (4, 4, 2)})
    with pytest.raises(
        CheckpointError,
        match=r"embedding/kernel: checkpoint \(8, 8, 3, 32\), model \(2, 4, 4, 3, 32\)",
    ):
        inflate(vit_token, cfg)


def test_not_a_vit():
    with pytest.raises(
        CheckpointError,
        match="The checkpoint is not a complete ViT / ViViT: it lacks embedding/kernel",
    ):
        inflate({"conv1": {"kernel": np.zeros((3, 3, 3, 8))}}, lib.vivit_config())


def test_declared_classifier_is_checked(vit_gap):
    with pytest.raises(CheckpointError, match="classifier='token'.*has no CLS"):
        inflate(vit_gap, lib.vivit_config(), model_config={"model": {"classifier": "token"}})


def test_init_from_config_keys():
    defaults = checkpoints.default_init_from_config()
    assert defaults.temporal_attention_init == "zero_output"
    assert defaults.positional_embed_size_change == "resize_tile"
    with pytest.raises(
        ValueError, match=r"Unknown config key 'config\.init_from\.restore_pos_emb'"
    ):
        checkpoints.resolve_init_from({"restore_pos_emb": True})
    with pytest.raises(ValueError, match="positional_embed_size_change='stretch'"):
        checkpoints.resolve_init_from({"positional_embed_size_change": "stretch"})
    with pytest.raises(ValueError, match="temporal_attention_init='ones'"):
        checkpoints.resolve_init_from({"temporal_attention_init": "ones"})


def test_changes_are_logged_once_as_a_table(vit_token, caplog):
    cfg = lib.vivit_config()
    _, params = lib.init_vivit(cfg)
    config = lib.init_from_config(cfg)
    with caplog.at_level(logging.INFO):
        checkpoints.init_from_pretrained(
            params, config, restored=vit_token, input_shape=(8, 32, 32)
        )
    tables = [r.getMessage() for r in caplog.records if "parameter" in r.getMessage()]
    assert len(tables) == 1
    assert "inflated: central frame 1 of 2" in tables[0]
    assert "re-initialised to zeros" in tables[0]


def test_no_checkpoint_path_keeps_params():
    cfg = lib.vivit_config()
    _, params = lib.init_vivit(cfg)
    new = checkpoints.init_from_pretrained(params, lib.init_from_config(cfg))
    lib.assert_trees_equal(new, params)


def test_input_shape_from_dataset_configs(vit_token):
    cfg = lib.vivit_config()
    _, params = lib.init_vivit(cfg, video_shape=(1, 8, 48, 48, 3))
    config = lib.init_from_config(cfg)
    config.dataset_configs = {"num_frames": 8, "crop_size": 48}
    new = checkpoints.init_from_pretrained(params, config, restored=vit_token)
    assert get(new, POS).shape == (1, 1 + 4 * 36, 32)


def test_variables_dict_is_rejected(vit_token):
    cfg = lib.vivit_config()
    _, params = lib.init_vivit(cfg)
    with pytest.raises(CheckpointError, match=r"not the variables dict"):
        checkpoints.init_from_pretrained(
            {"params": params}, lib.init_from_config(cfg), restored=vit_token
        )
