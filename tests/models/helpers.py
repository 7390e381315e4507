"""Tiny model configs shared by the model tests."""

import ml_collections

TINY = dict(
    hidden_size=32,
    num_heads=4,
    mlp_dim=48,
    num_layers=2,
    patches=dict(size=(4, 4, 2)),
    representation_size=None,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
TINY_INPUT = (2, 8, 16, 16, 3)  # B, T, H, W, C -> 4 x 4 x 4 tubelets


def tiny_config(kind="spacetime", classifier="gap", **overrides):
    cfg = dict(TINY, classifier=classifier, attention_config=dict(type=kind))
    if kind == "factorized_encoder":
        cfg["spatial_transformer"] = dict(num_layers=2, num_heads=4, mlp_dim=48)
        cfg["temporal_transformer"] = dict(num_layers=1, num_heads=4, mlp_dim=48)
    for key, value in overrides.items():
        if key in ("attention_config", "temporal_encoding_config") and key in cfg:
            cfg[key] = dict(cfg[key], **value)
        else:
            cfg[key] = value
    return ml_collections.ConfigDict(cfg)


def randomize(params, key, scale=0.3):
    """Adds noise to every parameter so zero-initialised heads and CLS tokens matter."""
    import jax

    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    )
