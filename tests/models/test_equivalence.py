"""vivit_jax loads parameters laid out by the original code and gives the same logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import scenic_reference as ref
from tests.models.helpers import TINY_INPUT, randomize, tiny_config
from vivit_jax.models import create_model

CASES = [
    ("spacetime", "token", {}),
    ("spacetime", "gap", {}),
    ("spacetime", "gmp", {"representation_size": 24}),
    ("factorized_encoder", "token", {}),
    ("factorized_encoder", "gap", {}),
    ("factorized_encoder", "token", {"spatial_only_baseline": True}),
    ("factorized_self_attention_block", "gap", {"attention_order": "space_time"}),
    ("factorized_self_attention_block", "gsp", {"attention_order": "time_space"}),
    ("factorized_dot_product_attention", "gap", {}),
]


def _reference(kind, classifier, extra, num_classes):
    cfg = dict(
        hidden=32,
        heads=4,
        mlp=48,
        layers=2,
        temporal_layers=1,
        patch=(4, 4, 2),
        classifier=classifier,
        kind=kind,
        order=extra.get("attention_order", "time_space"),
        representation_size=extra.get("representation_size"),
        spatial_only_baseline=extra.get("spatial_only_baseline", False),
    )
    if kind == "factorized_encoder":
        return ref.RefFactorisedEncoder(cfg, num_classes)
    return ref.RefViViT(cfg, num_classes)


@pytest.mark.parametrize("kind,classifier,extra", CASES)
def test_same_tree_and_logits_as_original(kind, classifier, extra):
    att = {k: v for k, v in extra.items() if k in ("attention_order", "spatial_only_baseline")}
    other = {k: v for k, v in extra.items() if k not in att}
    cfg = tiny_config(kind, classifier, attention_config=att, **other)
    model = create_model(cfg, num_classes=7)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = model.init(jax.random.key(1), video, train=False)["params"]
    params = randomize(params, jax.random.key(2))

    reference = _reference(kind, classifier, extra, 7)
    ref_params = ref.to_reference_params(params, kind)
    # Same names and shapes as a tree the original-structured code initialises itself.
    ref_init = reference.init(jax.random.key(3), video)["params"]
    shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)  # noqa: E731
    assert shapes(ref_init) == shapes(ref_params)

    ours = model.apply({"params": params}, video, train=False)
    theirs = reference.apply({"params": ref_params}, video)
    assert ours.shape == (2, 7)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5)
    assert float(jnp.std(ours)) > 1e-2  # the comparison is not between zeros


def test_temporal_sampling_tokenizer_matches_per_frame_2d_conv():
    cfg = tiny_config(
        "spacetime",
        "gap",
        temporal_encoding_config=dict(method="temporal_sampling", n_sampled_frames=3),
        patches=dict(size=(4, 4)),
    )
    model = create_model(cfg, num_classes=5)
    video = jax.random.normal(jax.random.key(0), TINY_INPUT)
    params = model.init(jax.random.key(1), video, train=False)["params"]
    assert params["embedding"]["kernel"].shape == (4, 4, 3, 32)  # a ViT patch kernel
    params = randomize(params, jax.random.key(2))
    # Frames round(arange(8/4, 8, 8/4)) = 2, 4, 6 are kept; the rest must not matter.
    other = video.at[:, jnp.array([0, 1, 3, 5, 7])].set(0.0)
    logits = model.apply({"params": params}, video, train=False)
    np.testing.assert_allclose(
        logits, model.apply({"params": params}, other, train=False), atol=1e-5
    )
    kept = video.at[:, 4].set(0.0)
    assert np.abs(logits - model.apply({"params": params}, kept, train=False)).max() > 1e-3
