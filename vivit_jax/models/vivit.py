"""ViViT Models 1–4 and `create_model`.

Module and parameter names are Scenic's (a checkpoint contract, see REFERENCE §3):
- Models 1, 3, 4: top module `ViViT` with `embedding`, `cls` (token classifier only),
  `Transformer/{posembed_input, encoderblock_i, encoder_norm}`, `pre_logits`, `output_projection`.
- Model 2: `SpaceTimeViViT` with `embedding`, `cls_SpatialTransformer`, `SpatialTransformer`,
  `cls_TemporalTransformer`, `TemporalTransformer`, `pre_logits`, `output_projection`.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vivit_jax.models import config as config_lib
from vivit_jax.models import layers
from vivit_jax.models.factorised import (
    FactorizedSelfAttentionBlock,
    factorized_dot_product_attention,
)
from vivit_jax.models.layers import Dtype, EncoderBlock
from vivit_jax.models.tokenizers import AddPositionEmbs, tokenize


class Encoder(nn.Module):
    """Position embedding, dropout, `num_layers` blocks and the final LayerNorm.

    Tokens are `[..., N, D]` for Models 1 and 2 (any leading batch axes) and `[B, T, S, D]` for
    Models 3 and 4, whose blocks need the time/space grid.

    Attributes:
      mlp_dim: MLP width.
      num_layers: Number of blocks.
      num_heads: Attention heads.
      attention_type: One of `config.VARIANTS`.
      attention_order: Model 3 only.
      dropout_rate: Dropout rate.
      attention_dropout_rate: Attention-weight dropout.
      stochastic_droplayer_rate: Stochastic depth of the last block; block i gets
        `i / max(L - 1, 1) * rate`.
      dtype: Compute dtype.
      attention_implementation: 'einsum' or 'fused'.
      remat: Rematerialise each block in the backward pass (saves activation memory).
    """

    mlp_dim: int
    num_layers: int
    num_heads: int
    attention_type: str = "spacetime"
    attention_order: str = "time_space"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_droplayer_rate: float = 0.0
    dtype: Dtype = jnp.float32
    attention_implementation: str = "einsum"
    remat: bool = False

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        temporal_dims: int | None = None,
        output_tokens: int | None = None,
    ) -> jax.Array:
        """Encodes `[..., N, D]` tokens; Models 3/4 also need `temporal_dims` (= nt).

        With `output_tokens=n` (Models 1 and 2) the result is `[..., n, D]`, the first n tokens'
        encodings: the last block computes only those (its other outputs would be discarded).
        """
        if output_tokens is not None and self.attention_type in config_lib.FACTORISED_ATTENTION:
            raise ValueError(f"output_tokens is not supported by {self.attention_type!r}.")
        x = AddPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
        x = x.astype(self.dtype)
        flat_shape = x.shape
        # cuDNN's flash attention takes even lengths only, and a class token makes ViViT's odd
        # (3137, 197, 17): pad one token here, masked as a key in every block, rather than
        # padding q, k and v (and their gradients) in every block (7% of a ViViT-B step, H200).
        length = x.shape[-2]
        key_length = None
        if (
            length % 2
            and self.attention_type not in config_lib.FACTORISED_ATTENTION
            and self.attention_implementation == "fused"
            and layers.fused_backend(self.dtype) == "cudnn"
        ):
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, 1), (0, 0)])
            key_length = length
        if self.attention_type in config_lib.FACTORISED_ATTENTION:
            b, n, d = x.shape
            x = x.reshape(b, temporal_dims, n // temporal_dims, d)  # [B, T, S, D]

        if self.attention_type == "factorized_self_attention_block":
            block_cls = functools.partial(
                FactorizedSelfAttentionBlock, attention_order=self.attention_order
            )
        elif self.attention_type == "factorized_dot_product_attention":
            block_cls = functools.partial(
                EncoderBlock, attention_fn=factorized_dot_product_attention
            )
        else:
            block_cls = EncoderBlock
        if self.remat:
            # Argument 2 (`deterministic`) is a Python bool; self is argument 0.
            block_cls = nn.remat(block_cls, static_argnums=(2,))

        for i in range(self.num_layers):
            last = (
                {"output_tokens": output_tokens}
                if output_tokens and i == self.num_layers - 1
                else {}
            )
            x = block_cls(
                mlp_dim=self.mlp_dim,
                num_heads=self.num_heads,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                droplayer_p=i / max(self.num_layers - 1, 1) * self.stochastic_droplayer_rate,
                dtype=self.dtype,
                attention_implementation=self.attention_implementation,
                name=f"encoderblock_{i}",
                **last,
                **({} if key_length is None else {"key_length": key_length}),
            )(x, not train)
        if key_length is not None and output_tokens is None:
            x = x[..., :key_length, :]
        if output_tokens is None:
            x = x.reshape(flat_shape)
        return nn.LayerNorm(name="encoder_norm")(x)


def _pool(x: jax.Array, classifier: str) -> jax.Array:
    """Reduces the token axis (-2) of `[..., N, D]`; 'token' takes the CLS at index 0."""
    if classifier == "token":
        return x[..., 0, :]
    fn = {"gap": jnp.mean, "gmp": jnp.max, "gsp": jnp.sum}[classifier]
    return fn(x, axis=-2)


def _prepend_cls(module: nn.Module, x: jax.Array, name: str) -> jax.Array:
    cls = module.param(name, nn.initializers.zeros, (1, 1, x.shape[-1]))
    cls = jnp.broadcast_to(cls.astype(x.dtype), x.shape[:-2] + (1, x.shape[-1]))
    return jnp.concatenate([cls, x], axis=-2)


def _head(x: jax.Array, num_classes: int, c: ml_collections.ConfigDict) -> jax.Array:
    """Optional `pre_logits` (Dense + tanh), then the zero-initialised `output_projection`.

    Called inside the top module's compact method, so both sit at the top of the tree.
    """
    x = x.astype(jnp.float32)
    if c.representation_size is not None:
        x = jnp.tanh(layers.Dense(c.representation_size, name="pre_logits")(x))
    if c.return_prelogits:
        return x
    return layers.Dense(num_classes, kernel_init=nn.initializers.zeros, name="output_projection")(x)


class ViViT(nn.Module):
    """Models 1 (spacetime), 3 (factorised self-attention) and 4 (factorised dot-product).

    Attributes:
      num_classes: Output logits.
      model: Completed `config.model` (see `config.complete_model_config`).
      dtype: Compute dtype; parameters are float32.
    """

    num_classes: int
    model: ml_collections.ConfigDict
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, debug: bool = False) -> jax.Array:
        del debug
        c = self.model
        config_lib.validate_input_shape(c, x.shape[1:])
        tokens = _tokenize(c, x, self.dtype)  # [B, nt, nh, nw, D]
        b, nt, nh, nw, d = tokens.shape
        x = tokens.reshape(b, nt * nh * nw, d)  # frame-major token order
        if c.classifier == "token":
            x = _prepend_cls(self, x, "cls")
        # Only the class token is read after the encoder: its last block need compute no other.
        output_tokens = None if c.return_preclassifier else _output_tokens(c)
        x = _encoder(c, c, self.dtype, name="Transformer")(
            x, train=train, temporal_dims=nt, output_tokens=output_tokens
        )
        if c.return_preclassifier:
            return x
        return _head(_pool(x, c.classifier), self.num_classes, c)


class SpaceTimeViViT(nn.Module):
    """Model 2, the factorised encoder: a spatial ViT per frame, then a temporal transformer.

    With `attention_config.spatial_only_baseline` the temporal transformer is replaced by a mean
    over frames (the paper's average-pool baseline).

    Attributes:
      num_classes: Output logits.
      model: Completed `config.model`.
      dtype: Compute dtype.
    """

    num_classes: int
    model: ml_collections.ConfigDict
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, debug: bool = False) -> jax.Array:
        del debug
        c = self.model
        config_lib.validate_input_shape(c, x.shape[1:])
        tokens = _tokenize(c, x, self.dtype)
        b, nt, nh, nw, d = tokens.shape
        # Frames are a batch axis of the spatial encoder: one set of weights for all frames,
        # stochastic depth drawn per video (as the original's vmap over time).
        x = tokens.reshape(b, nt, nh * nw, d)
        if c.classifier == "token":
            x = _prepend_cls(self, x, "cls_SpatialTransformer")
        output_tokens = _output_tokens(c)
        x = _encoder(c, c.spatial_transformer, self.dtype, name="SpatialTransformer")(
            x, train=train, output_tokens=output_tokens
        )
        x = _pool(x, c.classifier)  # [B, T, D]
        if c.attention_config.spatial_only_baseline:
            x = jnp.mean(x, axis=1)
        else:
            if c.classifier == "token":
                x = _prepend_cls(self, x, "cls_TemporalTransformer")
            x = _encoder(c, c.temporal_transformer, self.dtype, name="TemporalTransformer")(
                x, train=train, output_tokens=output_tokens
            )
            x = _pool(x, c.classifier)
        return _head(x, self.num_classes, c)


def _output_tokens(c: ml_collections.ConfigDict) -> int | None:
    """1 where only the class token is read after an encoder, so that its last block computes
    that token alone (`model.last_block_cls_only`); None: every token."""
    return 1 if c.classifier == "token" and c.last_block_cls_only else None


def _tokenize(c: ml_collections.ConfigDict, x: jax.Array, dtype: Dtype) -> jax.Array:
    tec = c.temporal_encoding_config
    return tokenize(
        x,
        hidden_size=c.hidden_size,
        patch_size=tuple(c.patches.size),
        method=tec.method,
        kernel_init_method=tec.kernel_init_method,
        n_sampled_frames=tec.n_sampled_frames,
        dtype=dtype,
    )


def _encoder(c, stack, dtype, name: str) -> Encoder:
    return Encoder(
        mlp_dim=stack.mlp_dim,
        num_layers=stack.num_layers,
        num_heads=stack.num_heads,
        attention_type=c.attention_config.type,
        attention_order=c.attention_config.attention_order,
        dropout_rate=c.dropout_rate,
        attention_dropout_rate=c.attention_dropout_rate,
        stochastic_droplayer_rate=c.stochastic_droplayer_rate,
        dtype=dtype,
        attention_implementation=c.attention_implementation,
        remat=c.remat,
        name=name,
    )


def create_model(model_config, num_classes: int, *, dtype: Dtype | str = jnp.float32) -> nn.Module:
    """Builds the ViViT variant that `model_config` (the original's `config.model`) describes.

    Args:
      model_config: `ConfigDict` (or dict) with the original `config.model` keys; missing keys
        take the original's defaults, unknown keys raise.
      num_classes: Number of output classes.
      dtype: Compute dtype, e.g. the original's `config.model_dtype_str` ('float32' or
        'bfloat16'); parameters stay float32.

    Returns:
      A `flax.linen.Module`; `module.apply({'params': p}, video, train=False)` maps
      `[B, T, H, W, 3]` to `[B, num_classes]` logits (`train=True` needs a 'dropout' rng).

    Raises:
      ValueError: naming the key, for an unknown key or a value the model cannot use.
    """
    complete = config_lib.complete_model_config(model_config)
    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"model_dtype_str={dtype!r} is not one of 'float32', 'bfloat16', 'float16'."
            )
        dtype = getattr(jnp, dtype)
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    frozen = ml_collections.FrozenConfigDict(complete)
    cls = SpaceTimeViViT if complete.attention_config.type == "factorized_encoder" else ViViT
    return cls(num_classes=num_classes, model=frozen, dtype=dtype)
