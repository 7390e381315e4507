"""HuggingFace ViViT: read `save_pretrained` directories, export Model 1, same logits.

The round trip through files needs neither torch nor transformers (safetensors.numpy); the
logit comparisons run only where `transformers` is installed.
"""

import json
import os
import sys

import ckpt_testlib as lib
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_jax import checkpoints
from vivit_jax.checkpoints import CheckpointError

FRAMES, SIZE = 8, 32
VIDEO = np.random.default_rng(5).standard_normal((2, FRAMES, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model1():
    cfg = lib.vivit_config("spacetime", "token", layers=2)
    _, params = lib.init_vivit(cfg, num_classes=4)
    rng = np.random.default_rng(0)
    params["output_projection"]["kernel"] = rng.standard_normal((32, 4)).astype(np.float32)
    params["output_projection"]["bias"] = rng.standard_normal(4).astype(np.float32)
    return cfg, params


def logits(cfg, params, video, num_classes):
    from vivit_jax.models import create_model

    model = create_model(cfg, num_classes)
    return np.asarray(model.apply({"params": params}, jnp.asarray(video), train=False))


def test_export_and_read_back_without_torch(tmp_path, model1, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # Reading safetensors must not need torch.
    cfg, params = model1
    checkpoints.export_huggingface_vivit(params, cfg, tmp_path, num_frames=FRAMES, image_size=SIZE)
    hf = json.load(open(tmp_path / "config.json"))
    assert hf["model_type"] == "vivit" and hf["tubelet_size"] == [2, 8, 8]
    assert hf["architectures"] == ["VivitForVideoClassification"]
    model_config, num_classes, back = checkpoints.load_huggingface_vivit(tmp_path)
    assert num_classes == 4
    assert tuple(model_config.patches.size) == (8, 8, 2)
    assert (model_config.hidden_size, model_config.num_heads, model_config.mlp_dim) == (32, 2, 64)
    assert model_config.num_layers == 2 and model_config.classifier == "token"
    lib.assert_trees_equal(back, params)
    lib.assert_trees_equal(checkpoints.load_params(tmp_path), params)  # Format detected.
    np.testing.assert_allclose(
        logits(model_config, back, VIDEO, 4), logits(cfg, params, VIDEO, 4), atol=1e-6
    )


def test_export_refuses_what_hf_cannot_express(tmp_path, model1):
    cfg, params = model1
    gap = lib.vivit_config("spacetime", "gap")
    with pytest.raises(CheckpointError, match="classifier='gap'"):
        checkpoints.export_huggingface_vivit(params, gap, tmp_path, num_frames=8, image_size=32)
    with pytest.raises(CheckpointError, match="pos_embedding has 65 positions.*need 129"):
        checkpoints.export_huggingface_vivit(params, cfg, tmp_path, num_frames=16, image_size=32)


def test_bad_hf_directories(tmp_path, model1):
    cfg, params = model1
    with pytest.raises(FileNotFoundError):
        checkpoints.load_huggingface_vivit(tmp_path / "missing")
    checkpoints.export_huggingface_vivit(params, cfg, tmp_path, num_frames=8, image_size=32)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoints.load_huggingface_vivit(tmp_path)
    os.remove(weights)
    with pytest.raises(FileNotFoundError, match="No model weights"):
        checkpoints.load_huggingface_vivit(tmp_path)
    hf = json.load(open(tmp_path / "config.json"))
    hf["model_type"] = "vit"
    json.dump(hf, open(tmp_path / "config.json", "w"))
    with pytest.raises(CheckpointError, match="model_type='vit'"):
        checkpoints.load_huggingface_vivit(tmp_path)


def test_pytorch_bin_without_torch_is_a_clear_error(tmp_path, model1, monkeypatch):
    cfg, params = model1
    checkpoints.export_huggingface_vivit(params, cfg, tmp_path, num_frames=8, image_size=32)
    os.rename(tmp_path / "model.safetensors", tmp_path / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match="needs torch"):
        checkpoints.load_huggingface_vivit(tmp_path)


# ------------------------------------------------------------------------------------------
# Against the real PyTorch model.


def _torch_logits(hf_model, video):
    import torch

    pixel_values = torch.from_numpy(video.transpose(0, 1, 4, 2, 3).copy())  # [B, T, C, H, W]
    with torch.no_grad():
        return hf_model(pixel_values=pixel_values).logits.numpy()


def test_exported_model_gives_the_same_logits_in_transformers(tmp_path, model1):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg, params = model1
    checkpoints.export_huggingface_vivit(params, cfg, tmp_path, num_frames=FRAMES, image_size=SIZE)
    hf_model = transformers.VivitForVideoClassification.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(
        _torch_logits(hf_model, VIDEO), logits(cfg, params, VIDEO, 4), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_hf_model_loads_with_the_same_logits(tmp_path, weights):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    hf_config = transformers.VivitConfig(
        image_size=SIZE,
        num_frames=FRAMES,
        tubelet_size=[2, 8, 8],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    hf_model = transformers.VivitForVideoClassification(hf_config).eval()
    with torch.no_grad():  # Random everything, LayerNorms and the CLS token included.
        for p in hf_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf_model.save_pretrained(tmp_path)  # Hub names (encoder.layer.N.attention.attention.query).
    if weights == "bin":
        # transformers 5.x's in-memory names (layers.N.attention.q_proj), as a torch pickle.
        torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
        os.remove(tmp_path / "model.safetensors")
    model_config, num_classes, params = checkpoints.load_huggingface_vivit(tmp_path)
    assert num_classes == 3
    np.testing.assert_allclose(
        logits(model_config, params, VIDEO, 3), _torch_logits(hf_model, VIDEO), atol=1e-4, rtol=1e-4
    )
