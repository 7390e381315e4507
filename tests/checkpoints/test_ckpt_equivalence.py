"""Inflated ViViTs compute what the image ViT computes (the point of inflation).

A random image ViT is saved in the vision_transformer `.npz` layout, read back, and inflated
into the project's models through `init_from_pretrained` with `checkpoint_path`, as training
does. Videos are 8x32x32, tubelets 8x8x2, so the central frame of tubelet k is frame 2k+1.
"""

import ckpt_testlib as lib
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vivit_jax import checkpoints

ATOL = 2e-5
RNG = np.random.default_rng(42)
VIDEO = RNG.standard_normal((2, 8, 32, 32, 3)).astype(np.float32)
STATIC = np.repeat(VIDEO[:, :1], 8, axis=1)


def _saved_vit(tmp_path_factory, classifier):
    model, params = lib.random_image_vit(seed=3, classifier=classifier, num_layers=1)
    path = tmp_path_factory.mktemp("vit") / f"vit_{classifier}.npz"
    lib.save_vit_npz(path, params)
    return classifier, model, params, str(path)


@pytest.fixture(scope="module")
def vit_gap(tmp_path_factory):
    return _saved_vit(tmp_path_factory, "gap")


@pytest.fixture(scope="module", params=["token", "gap"])
def vit_npz(request, tmp_path_factory):
    return _saved_vit(tmp_path_factory, request.param)


def _image_prelogits(model, params, frames):
    return np.asarray(model.apply({"params": params}, jnp.asarray(frames), prelogits=True))


def _inflate(cfg, path, **init_from):
    _, params = lib.init_vivit(cfg, video_shape=VIDEO.shape)
    config = lib.init_from_config(cfg, checkpoint_path=path, **init_from)
    return checkpoints.init_from_pretrained(params, config, input_shape=VIDEO.shape[1:4])


@pytest.mark.parametrize("kernel_init", ["central_frame_initializer", "average_frame_initializer"])
def test_model2_spatial_only_equals_image_vit_on_static_video(vit_npz, kernel_init):
    classifier, model, vit, path = vit_npz
    cfg = lib.vivit_config(
        "factorized_encoder",
        classifier,
        **{
            "attention_config.spatial_only_baseline": True,
            "temporal_encoding_config.kernel_init_method": kernel_init,
        },
    )
    params = _inflate(cfg, path)
    want = _image_prelogits(model, vit, STATIC[:, 0])
    np.testing.assert_allclose(lib.prelogits(cfg, params, STATIC), want, atol=ATOL)


def test_model2_spatial_only_averages_frames_of_a_moving_video(vit_npz):
    classifier, model, vit, path = vit_npz
    cfg = lib.vivit_config(
        "factorized_encoder", classifier, **{"attention_config.spatial_only_baseline": True}
    )
    params = _inflate(cfg, path)
    per_frame = [_image_prelogits(model, vit, VIDEO[:, f]) for f in (1, 3, 5, 7)]
    np.testing.assert_allclose(
        lib.prelogits(cfg, params, VIDEO), np.mean(per_frame, axis=0), atol=ATOL
    )


def test_model1_gap_equals_gap_image_vit_on_static_video(vit_gap):
    """Attention over T copies of the same keys equals attention over one copy, but only
    without a CLS token (its key is not repeated), hence a GAP image model here."""
    _, model, vit, path = vit_gap
    cfg = lib.vivit_config(
        "spacetime",
        "gap",
        **{"temporal_encoding_config.kernel_init_method": "average_frame_initializer"},
    )
    params = _inflate(cfg, path)
    want = _image_prelogits(model, vit, STATIC[:, 0])
    np.testing.assert_allclose(lib.prelogits(cfg, params, STATIC), want, atol=ATOL)


@pytest.mark.parametrize("order", ["space_time", "time_space"])
def test_model3_processes_each_frame_as_the_image_model(vit_gap, order):
    """At initialisation temporal attention adds exactly zero, so GAP over all tokens is the
    mean over frames of the image model's GAP representation (tokens of every frame)."""
    _, model, vit, path = vit_gap
    cfg = lib.vivit_config(
        "factorized_self_attention_block", "gap", **{"attention_config.attention_order": order}
    )
    params = _inflate(cfg, path)
    per_frame = [_image_prelogits(model, vit, VIDEO[:, f]) for f in (1, 3, 5, 7)]
    np.testing.assert_allclose(
        lib.prelogits(cfg, params, VIDEO), np.mean(per_frame, axis=0), atol=ATOL
    )


def test_model3_temporal_attention_learns(vit_gap):
    _, _, _, path = vit_gap
    from vivit_jax.models import create_model

    cfg = lib.vivit_config("factorized_self_attention_block", "gap")
    params = _inflate(cfg, path)
    # A zero head passes no gradient into the encoder; give it weights as after some training.
    head = params["output_projection"]
    head["kernel"] = RNG.standard_normal(head["kernel"].shape).astype(np.float32)
    model = create_model(cfg, 5)
    labels = jnp.asarray([1, 3])

    def loss_fn(p):
        logits = model.apply({"params": p}, jnp.asarray(VIDEO), train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def sgd_step(p):
        grads = jax.grad(loss_fn)(p)
        return jax.tree.map(lambda w, g: w - 0.5 * g, p, grads)

    def time_attention(p):
        return lib.trees.flatten(
            p["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_time"]
        )

    before = time_attention(params)
    assert not np.any(before[("out", "kernel")])
    one = sgd_step(params)
    after_one = time_attention(one)
    assert np.abs(after_one[("out", "kernel")]).max() > 1e-6
    # q/k/v get gradients once the output projection is non-zero (all four were trainable).
    after_two = time_attention(sgd_step(one))
    for proj in ("query", "key", "value"):
        assert np.abs(after_two[(proj, "kernel")] - before[(proj, "kernel")]).max() > 1e-9, proj


def test_average_inflation_on_static_clip_equals_2d_patch_embedding(vit_gap):
    _, _, vit, _ = vit_gap
    kernel2d = vit["embedding"]["kernel"]  # (8, 8, 3, D)
    cfg = lib.vivit_config(
        **{"temporal_encoding_config.kernel_init_method": "average_frame_initializer"}
    )
    _, target = lib.init_vivit(cfg)
    init_from = checkpoints.resolve_init_from(None)
    new, _ = checkpoints.inflate_params(target, vit, cfg, init_from, input_shape=(8, 32, 32))
    kernel3d = new["embedding"]["kernel"]  # (2, 8, 8, 3, D)
    patch = STATIC[0, :2, :8, :8]  # One tubelet of a static clip: (t, h, w, 3).
    np.testing.assert_allclose(
        np.einsum("thwc,thwcd->d", patch, kernel3d),
        np.einsum("hwc,hwcd->d", patch[0], kernel2d),
        atol=1e-5,
    )
