"""ViViT Models 1–4 (Arnab et al., ICCV 2021, Section 3.3) and `create_model`.

Module and parameter names are Scenic's (`scenic/projects/vivit/model.py`; a checkpoint
contract):
- Models 1, 3, 4: top module `ViViT` with `embedding`, `cls` (token classifier only),
  `Transformer/{posembed_input, encoderblock_i, encoder_norm}`, `pre_logits`, `output_projection`.
- Model 2: `SpaceTimeViViT` with `embedding`, `cls_SpatialTransformer`, `SpatialTransformer`,
  `cls_TemporalTransformer`, `TemporalTransformer`, `pre_logits`, `output_projection`.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vivit_jax.models import config as model_config_lib
from vivit_jax.models.attention import Attention, Dtype, FusedFn
from vivit_jax.models.factorised import (
    FactorizedSelfAttentionBlock,
    factorized_dot_product_attention,
)
from vivit_jax.models.layers import EncoderBlock
from vivit_jax.models.tokenizers import AddPositionEmbs, tokenize

FACTORISED_ATTENTION = model_config_lib.FACTORISED_ATTENTION


@dataclasses.dataclass(frozen=True)
class Stack:
    """The size of one transformer encoder.

    Attributes:
      num_layers: Blocks.
      num_heads: Attention heads.
      mlp_dim: MLP width.
    """

    num_layers: int
    num_heads: int
    mlp_dim: int


class Encoder(nn.Module):
    """Position embedding, dropout, the blocks and the final LayerNorm.

    Tokens are `[..., N, D]` for Models 1 and 2 (any leading batch axes) and `[B, T, S, D]` for
    Models 3 and 4, whose blocks need the time/space grid.

    Attributes:
      stack: Number of blocks, heads and MLP width.
      attention_type: One of `models.config.VARIANTS`.
      attention_order: Model 3 only.
      dropout_rate: Dropout rate.
      attention_dropout_rate: Attention-weight dropout.
      stochastic_droplayer_rate: Stochastic depth of the last block; block i gets
        `i / max(L - 1, 1) * rate`.
      dtype: Compute dtype.
      attention: Which attention kernel; with `attention.pad_to_even` an odd token count is
        padded by one token, once for all blocks.
      remat: Rematerialise each block in the backward pass (saves activation memory).
    """

    stack: Stack
    attention_type: str = "spacetime"
    attention_order: str = "time_space"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_droplayer_rate: float = 0.0
    dtype: Dtype = jnp.float32
    attention: Attention = Attention()
    remat: bool = False

    def _block(self):
        if self.attention_type == "factorized_self_attention_block":
            block = functools.partial(
                FactorizedSelfAttentionBlock, attention_order=self.attention_order
            )
        elif self.attention_type == "factorized_dot_product_attention":
            block = functools.partial(EncoderBlock, attention_core=factorized_dot_product_attention)
        else:
            block = EncoderBlock
        if self.remat:
            # Argument 2 (`deterministic`) is a Python bool; self is argument 0.
            block = nn.remat(block, static_argnums=(2,))
        return block

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
        factorised = self.attention_type in FACTORISED_ATTENTION
        if output_tokens is not None and factorised:
            raise ValueError(f"output_tokens is not supported by {self.attention_type!r}.")
        x = AddPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
        x = x.astype(self.dtype)
        flat_shape = x.shape
        length = x.shape[-2]
        key_length = None
        if length % 2 and not factorised and self.attention.pad_to_even:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, 1), (0, 0)])
            key_length = length
        if factorised:
            b, n, d = x.shape
            x = x.reshape(b, temporal_dims, n // temporal_dims, d)  # [B, T, S, D]
        block = self._block()
        layers = self.stack.num_layers
        for i in range(layers):
            extra = {} if key_length is None else {"key_length": key_length}
            if output_tokens and i == layers - 1:
                extra["output_tokens"] = output_tokens
            x = block(
                mlp_dim=self.stack.mlp_dim,
                num_heads=self.stack.num_heads,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                droplayer_p=i / max(layers - 1, 1) * self.stochastic_droplayer_rate,
                dtype=self.dtype,
                attention=self.attention,
                name=f"encoderblock_{i}",
                **extra,
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


class _VideoTransformer(nn.Module):
    """What Models 1–4 share: tokeniser, classifier and head settings (see `ViViT`)."""

    num_classes: int
    hidden_size: int
    patch_size: tuple[int, ...]
    tokenizer: str = "3d_conv"
    kernel_init_method: str | None = None
    n_sampled_frames: int | None = None
    classifier: str = "token"
    representation_size: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    stochastic_droplayer_rate: float = 0.0
    return_prelogits: bool = False
    return_preclassifier: bool = False
    last_block_cls_only: bool = True
    remat: bool = False
    attention: Attention = Attention()
    dtype: Dtype = jnp.float32

    def _tokens(self, x: jax.Array) -> jax.Array:
        model_config_lib.check_input_shape(
            x.shape[1:], self.patch_size, self.tokenizer, self.n_sampled_frames
        )
        return tokenize(
            x,
            hidden_size=self.hidden_size,
            patch_size=tuple(self.patch_size),
            method=self.tokenizer,
            kernel_init_method=self.kernel_init_method,
            n_sampled_frames=self.n_sampled_frames,
            dtype=self.dtype,
        )  # [B, nt, nh, nw, D]

    def _encoder(self, stack: Stack, attention_type: str, attention_order: str, name: str):
        return Encoder(
            stack=stack,
            attention_type=attention_type,
            attention_order=attention_order,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            stochastic_droplayer_rate=self.stochastic_droplayer_rate,
            dtype=self.dtype,
            attention=self.attention,
            remat=self.remat,
            name=name,
        )

    def _output_tokens(self) -> int | None:
        """1 where only the class token is read after an encoder, so that its last block
        computes that token alone (`last_block_cls_only`); None: every token."""
        return 1 if self.classifier == "token" and self.last_block_cls_only else None

    def _head(self, x: jax.Array) -> jax.Array:
        """Optional `pre_logits` (Dense + tanh), then the zero-initialised `output_projection`.

        Called inside the top module's compact method, so both sit at the top of the tree.
        """
        x = x.astype(jnp.float32)
        if self.representation_size is not None:
            x = jnp.tanh(nn.Dense(self.representation_size, name="pre_logits")(x))
        if self.return_prelogits:
            return x
        return nn.Dense(
            self.num_classes, kernel_init=nn.initializers.zeros, name="output_projection"
        )(x)


class ViViT(_VideoTransformer):
    """Models 1 (spacetime), 3 (factorised self-attention) and 4 (factorised dot-product).

    Attributes:
      num_classes: Output logits.
      hidden_size: Token width D.
      patch_size: `(h, w, t)` tubelets, or `(h, w)` patches of sampled frames.
      encoder: The encoder's size.
      attention_type: 'spacetime', 'factorized_self_attention_block' or
        'factorized_dot_product_attention'.
      attention_order: Model 3's 'space_time' (the paper) or 'time_space' (Scenic's default).
      tokenizer: '3d_conv' (tubelets) or 'temporal_sampling' (uniform frame sampling).
      kernel_init_method: Random init of the tubelet kernel.
      n_sampled_frames: Frames kept by 'temporal_sampling'.
      classifier: 'token', 'gap', 'gmp' or 'gsp'.
      representation_size: Width of the `pre_logits` layer, or None (no such layer).
      dropout_rate, attention_dropout_rate, stochastic_droplayer_rate: Regularisers.
      return_prelogits: Return the representation before `output_projection`.
      return_preclassifier: Return every token after the encoder.
      last_block_cls_only: With the token classifier, the last block computes the class token
        alone (the same logits).
      remat: Rematerialise each block in the backward pass.
      attention: Which attention kernel (`Attention.resolve`).
      dtype: Compute dtype; parameters are float32.
    """

    encoder: Stack = Stack(12, 12, 3072)
    attention_type: str = "spacetime"
    attention_order: str = "time_space"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, debug: bool = False) -> jax.Array:
        del debug
        tokens = self._tokens(x)
        b, nt, nh, nw, d = tokens.shape
        x = tokens.reshape(b, nt * nh * nw, d)  # frame-major token order
        if self.classifier == "token":
            x = _prepend_cls(self, x, "cls")
        # Only the class token is read after the encoder: its last block need compute no other.
        output_tokens = None if self.return_preclassifier else self._output_tokens()
        encoder = self._encoder(
            self.encoder, self.attention_type, self.attention_order, "Transformer"
        )
        x = encoder(x, train=train, temporal_dims=nt, output_tokens=output_tokens)
        if self.return_preclassifier:
            return x
        return self._head(_pool(x, self.classifier))


class SpaceTimeViViT(_VideoTransformer):
    """Model 2, the factorised encoder: a spatial ViT per frame, then a temporal transformer.

    With `spatial_only_baseline` the temporal transformer is replaced by a mean over frames (the
    paper's average-pool baseline).

    Attributes:
      spatial: The spatial encoder's size (one set of weights shared by every frame).
      temporal: The temporal encoder's size.
      spatial_only_baseline: Average the frames instead of the temporal encoder.
      Others: as `ViViT`.
    """

    spatial: Stack = Stack(12, 12, 3072)
    temporal: Stack = Stack(4, 12, 3072)
    spatial_only_baseline: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, debug: bool = False) -> jax.Array:
        del debug
        tokens = self._tokens(x)
        b, nt, nh, nw, d = tokens.shape
        # Frames are a batch axis of the spatial encoder: one set of weights for all frames,
        # stochastic depth drawn per video (as the original's vmap over time).
        x = tokens.reshape(b, nt, nh * nw, d)
        if self.classifier == "token":
            x = _prepend_cls(self, x, "cls_SpatialTransformer")
        output_tokens = self._output_tokens()
        spatial = self._encoder(self.spatial, "spacetime", "time_space", "SpatialTransformer")
        x = _pool(spatial(x, train=train, output_tokens=output_tokens), self.classifier)
        if self.spatial_only_baseline:
            x = jnp.mean(x, axis=1)
        else:
            if self.classifier == "token":
                x = _prepend_cls(self, x, "cls_TemporalTransformer")
            temporal = self._encoder(
                self.temporal, "spacetime", "time_space", "TemporalTransformer"
            )
            x = _pool(temporal(x, train=train, output_tokens=output_tokens), self.classifier)
        return self._head(x)


def create_model(
    model_config,
    num_classes: int,
    *,
    dtype: Dtype | str = jnp.float32,
    fused_attention: FusedFn | None = None,
    platform: str | None = None,
) -> nn.Module:
    """Builds the ViViT variant that `model_config` (the original's `config.model`) describes.

    Args:
      model_config: `ConfigDict` (or dict) with the original `config.model` keys; missing keys
        take the original's defaults, unknown keys raise.
      num_classes: Number of output classes.
      dtype: Compute dtype, e.g. the original's `config.model_dtype_str` ('float32' or
        'bfloat16'); parameters stay float32.
      fused_attention: A fused attention core for `attention_implementation='fused'` where
        neither cuDNN nor padding applies (e.g. the CPU backend's kernel); None: XLA's.
      platform: Where the model will run ('cpu', 'gpu', 'tpu'); default JAX's default backend.
        It picks the fused kernel, once, here.

    Returns:
      A `flax.linen.Module`; `module.apply({'params': p}, video, train=False)` maps
      `[B, T, H, W, 3]` to `[B, num_classes]` logits (`train=True` needs a 'dropout' rng).

    Raises:
      ValueError: naming the key, for an unknown key or a value the model cannot use.
    """
    c = model_config_lib.complete_model_config(model_config)
    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(
                f"model_dtype_str={dtype!r} is not one of 'float32', 'bfloat16', 'float16'."
            )
        dtype = getattr(jnp, dtype)
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    attention = Attention.resolve(
        c.attention_implementation, dtype, platform or jax.default_backend(), fused_attention
    )
    tec = c.temporal_encoding_config
    common = dict(
        num_classes=num_classes,
        hidden_size=c.hidden_size,
        patch_size=tuple(c.patches.size),
        tokenizer=tec.method,
        kernel_init_method=tec.kernel_init_method,
        n_sampled_frames=tec.n_sampled_frames,
        classifier=c.classifier,
        representation_size=c.representation_size,
        dropout_rate=c.dropout_rate,
        attention_dropout_rate=c.attention_dropout_rate,
        stochastic_droplayer_rate=c.stochastic_droplayer_rate,
        return_prelogits=c.return_prelogits,
        return_preclassifier=c.return_preclassifier,
        last_block_cls_only=c.last_block_cls_only,
        remat=c.remat,
        attention=attention,
        dtype=dtype,
    )
    if c.attention_config.type == "factorized_encoder":
        return SpaceTimeViViT(
            spatial=Stack(**c.spatial_transformer.to_dict()),
            temporal=Stack(**c.temporal_transformer.to_dict()),
            spatial_only_baseline=c.attention_config.spatial_only_baseline,
            **common,
        )
    return ViViT(
        encoder=Stack(c.num_layers, c.num_heads, c.mlp_dim),
        attention_type=c.attention_config.type,
        attention_order=c.attention_config.attention_order,
        **common,
    )
