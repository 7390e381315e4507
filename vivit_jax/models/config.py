"""`config.model`: its keys (the original's, plus speed switches), defaults, and validation.

The keys are Scenic's `config.model` keys, so an original ViViT config works unchanged. Keys the
original reads with `.get(key, default)` get that default here; three keys are ours and only
change speed or memory, never the numerics of the float32 default:
`attention_implementation` ('einsum' | 'fused'), `remat` (bool), `last_block_cls_only` (bool).
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from vivit_jax.configdicts import merge_locked, require

VARIANTS = (
    "spacetime",
    "factorized_encoder",
    "factorized_self_attention_block",
    "factorized_dot_product_attention",
)
CLASSIFIERS = ("token", "gap", "gmp", "gsp")
ATTENTION_IMPLEMENTATIONS = ("einsum", "fused")
FACTORISED_ATTENTION = ("factorized_self_attention_block", "factorized_dot_product_attention")

# Model sizes of ViT / ViViT (hidden, layers, heads, MLP), the one table in the project.
SIZES = {
    "Ti": dict(hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "S": dict(hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "B": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "L": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "H": dict(hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}


def default_model_config() -> ml_collections.ConfigDict:
    """Every key `config.model` may hold, with the default the original code uses."""
    c = ml_collections.ConfigDict()
    c.attention_config = ml_collections.ConfigDict(
        dict(type="spacetime", attention_order="time_space", spatial_only_baseline=False)
    )
    c.hidden_size = 768
    c.num_heads = 12
    c.mlp_dim = 3072
    c.num_layers = 12
    c.spatial_transformer = ml_collections.ConfigDict(
        dict(num_layers=12, num_heads=12, mlp_dim=3072)
    )
    c.temporal_transformer = ml_collections.ConfigDict(
        dict(num_layers=4, num_heads=12, mlp_dim=3072)
    )
    c.representation_size = ml_collections.config_dict.placeholder(int)
    c.classifier = "token"
    c.dropout_rate = 0.1
    c.attention_dropout_rate = 0.1
    c.stochastic_droplayer_rate = 0.0
    c.patches = ml_collections.ConfigDict(dict(size=(16, 16, 2)))
    c.temporal_encoding_config = ml_collections.ConfigDict(
        dict(
            method="3d_conv",
            kernel_init_method=ml_collections.config_dict.placeholder(str),
            n_sampled_frames=ml_collections.config_dict.placeholder(int),
        )
    )
    c.return_prelogits = False
    c.return_preclassifier = False
    # Ours: speed and memory switches.
    c.attention_implementation = "einsum"
    c.remat = False
    # With the token classifier, an encoder's last block computes the class token alone (the
    # other tokens' outputs are never read): same logits, ~7% fewer FLOPs for ViViT-B Model 1.
    # False runs every token through every block, as the original (and the paper's FLOP counts).
    c.last_block_cls_only = True
    return c


def complete_model_config(model_config) -> ml_collections.ConfigDict:
    """Returns `default_model_config()` updated with `model_config`; unknown keys are an error."""
    full = merge_locked(default_model_config(), model_config, "model")
    validate_model_config(full)
    return full


def validate_model_config(c: ml_collections.ConfigDict) -> None:
    """Checks values that do not depend on the input shape; errors name the key."""
    att = c.attention_config.type
    require(att in VARIANTS, f"model.attention_config.type={att!r} is not one of {VARIANTS}.")
    require(
        c.classifier in CLASSIFIERS,
        f"model.classifier={c.classifier!r} is not one of {CLASSIFIERS}.",
    )
    require(
        not (att in FACTORISED_ATTENTION and c.classifier == "token"),
        f"model.classifier='token' is not supported by model.attention_config.type={att!r} "
        "(there is no single sequence to prepend a CLS token to); use 'gap'.",
    )
    require(
        c.attention_implementation in ATTENTION_IMPLEMENTATIONS,
        f"model.attention_implementation={c.attention_implementation!r} is not one of "
        f"{ATTENTION_IMPLEMENTATIONS}.",
    )
    for key in ("remat", "last_block_cls_only"):
        require(isinstance(c[key], bool), f"model.{key} must be True or False, got {c[key]!r}.")
    if att == "factorized_encoder":
        stacks = {
            "model.spatial_transformer": c.spatial_transformer,
            "model.temporal_transformer": c.temporal_transformer,
        }
    else:
        stacks = {"model": c}
    for name, s in stacks.items():
        for key in ("num_layers", "num_heads", "mlp_dim"):
            require(
                isinstance(s[key], int) and s[key] > 0,
                f"{name}.{key} must be a positive integer, got {s[key]!r}.",
            )
        require(
            c.hidden_size % s.num_heads == 0,
            f"model.hidden_size={c.hidden_size} is not divisible by {name}.num_heads="
            f"{s.num_heads}.",
        )
    require(
        isinstance(c.hidden_size, int) and c.hidden_size > 0,
        f"model.hidden_size must be a positive integer, got {c.hidden_size!r}.",
    )
    if att == "factorized_dot_product_attention":
        require(
            c.num_heads % 2 == 0,
            f"model.num_heads={c.num_heads} must be even for factorized_dot_product_attention "
            "(half the heads attend over time, half over space).",
        )
    for key in ("dropout_rate", "attention_dropout_rate", "stochastic_droplayer_rate"):
        require(0.0 <= c[key] < 1.0, f"model.{key}={c[key]!r} must be in [0, 1).")
    method = c.temporal_encoding_config.method
    size = tuple(c.patches.size)
    if method == "3d_conv":
        require(
            len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size),
            f"model.patches.size={size} must be (h, w, t) positive integers for tubelets.",
        )
    elif method == "temporal_sampling":
        require(
            len(size) in (2, 3) and all(isinstance(s, int) and s > 0 for s in size),
            f"model.patches.size={size} must be (h, w) positive integers.",
        )
        n = c.temporal_encoding_config.n_sampled_frames
        require(
            isinstance(n, int) and n > 0,
            "model.temporal_encoding_config.n_sampled_frames must be a positive integer for "
            f"method='temporal_sampling', got {n!r}.",
        )
    else:
        raise ValueError(
            f"model.temporal_encoding_config.method={method!r} is not one of "
            "('3d_conv', 'temporal_sampling')."
        )
    if c.representation_size is not None:
        require(
            c.representation_size > 0,
            f"model.representation_size must be positive or None, got {c.representation_size}.",
        )


def validate_input_shape(c: ml_collections.ConfigDict, input_shape: Sequence[int]) -> None:
    """Checks that videos of `input_shape` = (T, H, W, C) tokenise exactly under `c`."""
    tec = c.temporal_encoding_config
    check_input_shape(input_shape, tuple(c.patches.size), tec.method, tec.n_sampled_frames)


def check_input_shape(
    input_shape: Sequence[int],
    patch_size: tuple[int, ...],
    tokenizer: str,
    n_sampled_frames: int | None,
) -> None:
    """`validate_input_shape` on the model's own fields (errors name the config keys)."""
    t, h, w = input_shape[:3]
    fh, fw = patch_size[:2]
    require(
        h % fh == 0 and w % fw == 0,
        f"The crop size {h}x{w} (dataset_configs.crop_size) is not divisible by the patch size "
        f"{fh}x{fw} (model.patches.size).",
    )
    if tokenizer == "3d_conv":
        ft = patch_size[2]
        require(
            t % ft == 0,
            f"{t} frames (dataset_configs.num_frames) are not divisible by the tubelet's temporal "
            f"size t={ft} (model.patches.size[2]).",
        )
    else:
        require(
            n_sampled_frames <= t,
            f"model.temporal_encoding_config.n_sampled_frames={n_sampled_frames} exceeds the {t} "
            "input frames (dataset_configs.num_frames).",
        )
