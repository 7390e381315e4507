"""An independent statement of the original (Scenic) ViViT forward pass, for equivalence tests.

Built from the primitives the original uses — `flax.linen.MultiHeadDotProductAttention` with its
`attention_fn` hook, `nn.vmap` over frames for the factorised encoder, and axial reshapes for
Model 3 — and written from the paper and Scenic's `projects/vivit/model.py`, not from vivit_jax. A parameter tree
of `vivit_jax.models.create_model` must load here unchanged and give the same logits.
Inference only (no dropout, no stochastic depth).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

XAVIER = nn.initializers.xavier_uniform()


def head_split_attention(query, key, value, **unused):
    """Model 4: first half of the heads attend over time, second half over space.

    Inputs are `[b, t, s, heads, d]`; plain einsums, no reshapes.
    """
    del unused
    query = query / jnp.sqrt(query.shape[-1])
    n = query.shape[-2] // 2
    qt, qs = query[..., :n, :], query[..., n:, :]
    kt, ks = key[..., :n, :], key[..., n:, :]
    vt, vs = value[..., :n, :], value[..., n:, :]
    wt = jax.nn.softmax(jnp.einsum("btshd,bushd->btshu", qt, kt), axis=-1)
    ot = jnp.einsum("btshu,bushd->btshd", wt, vt)
    ws = jax.nn.softmax(jnp.einsum("btshd,btuhd->btshu", qs, ks), axis=-1)
    os_ = jnp.einsum("btshu,btuhd->btshd", ws, vs)
    return jnp.concatenate([ot, os_], axis=-2)


class RefMlp(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim, name="Dense_0")(x))
        return nn.Dense(x.shape[-1], name="Dense_1")(y)


class RefBlock(nn.Module):
    mlp_dim: int
    num_heads: int
    attention_fn: object = nn.dot_product_attention

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            kernel_init=XAVIER,
            attention_fn=self.attention_fn,
            name="MultiHeadDotProductAttention_0",
        )(y, y, deterministic=True)
        x = x + y
        y = RefMlp(self.mlp_dim, name="MlpBlock_0")(nn.LayerNorm(name="LayerNorm_1")(x))
        return x + y


class RefFactorisedBlock(nn.Module):
    """Model 3: axial attention by folding the other axis into the batch, as the original."""

    mlp_dim: int
    num_heads: int
    order: str

    @nn.compact
    def __call__(self, x):  # [b, t, s, d]
        b, t, s, d = x.shape
        for axis in self.order.split("_"):
            if axis == "time":
                seq = x.transpose(0, 2, 1, 3).reshape(b * s, t, d)
            else:
                seq = x.reshape(b * t, s, d)
            y = nn.LayerNorm(name=f"LayerNorm_{axis}")(seq)
            y = nn.SelfAttention(
                num_heads=self.num_heads, name=f"MultiHeadDotProductAttention_{axis}"
            )(y, deterministic=True)
            seq = seq + y
            if axis == "time":
                x = seq.reshape(b, s, t, d).transpose(0, 2, 1, 3)
            else:
                x = seq.reshape(b, t, s, d)
        x = x.reshape(b, t * s, d)
        y = RefMlp(self.mlp_dim, name="MlpBlock")(nn.LayerNorm(name="LayerNorm_mlp")(x))
        return (x + y).reshape(b, t, s, d)


def _add_posemb(module, x, name):
    # Sub-tree `name/pos_embedding`, (1, n, d) — the layout of the original's AddPositionEmbs.
    class AddPositionEmbs(nn.Module):
        @nn.compact
        def __call__(self, y):
            return y + self.param("pos_embedding", nn.initializers.zeros, (1,) + y.shape[1:])

    return AddPositionEmbs(name=name)(x)


class RefTransformer(nn.Module):
    mlp_dim: int
    num_layers: int
    num_heads: int
    kind: str
    temporal_dims: int | None = None
    order: str = "time_space"

    @nn.compact
    def __call__(self, x):  # [b, n, d]
        x = _add_posemb(self, x, "posembed_input")
        b, n, d = x.shape
        factorised = self.kind in (
            "factorized_self_attention_block",
            "factorized_dot_product_attention",
        )
        if factorised:
            x = x.reshape(b, self.temporal_dims, n // self.temporal_dims, d)
        for i in range(self.num_layers):
            if self.kind == "factorized_self_attention_block":
                block = RefFactorisedBlock(
                    self.mlp_dim, self.num_heads, self.order, name=f"encoderblock_{i}"
                )
            elif self.kind == "factorized_dot_product_attention":
                block = RefBlock(
                    self.mlp_dim, self.num_heads, head_split_attention, name=f"encoderblock_{i}"
                )
            else:
                block = RefBlock(self.mlp_dim, self.num_heads, name=f"encoderblock_{i}")
            x = block(x)
        x = x.reshape(b, n, d)
        return nn.LayerNorm(name="encoder_norm")(x)


def _tubelets(x, size, d):
    fh, fw, ft = size
    return nn.Conv(d, (ft, fh, fw), strides=(ft, fh, fw), padding="VALID", name="embedding")(x)


def _pool(x, classifier):
    if classifier == "token":
        return x[:, 0]
    return {"gap": jnp.mean, "gmp": jnp.max, "gsp": jnp.sum}[classifier](x, axis=1)


def _cls(module, x, name):
    cls = module.param(name, nn.initializers.zeros, (1, 1, x.shape[-1]))
    return jnp.concatenate([jnp.tile(cls, (x.shape[0], 1, 1)), x], axis=1)


class RefViViT(nn.Module):
    """Models 1, 3, 4 as the original `ViViT` (tubelet tokeniser)."""

    cfg: dict
    num_classes: int

    @nn.compact
    def __call__(self, video):
        c = self.cfg
        x = _tubelets(video, c["patch"], c["hidden"])
        b, t, h, w, d = x.shape
        x = x.reshape(b, t * h * w, d)
        if c["classifier"] == "token":
            x = _cls(self, x, "cls")
        x = RefTransformer(
            c["mlp"],
            c["layers"],
            c["heads"],
            c["kind"],
            t,
            c.get("order", "time_space"),
            name="Transformer",
        )(x)
        x = _pool(x, c["classifier"])
        if c.get("representation_size"):
            x = jnp.tanh(nn.Dense(c["representation_size"], name="pre_logits")(x))
        return nn.Dense(self.num_classes, name="output_projection")(x)


class RefFactorisedEncoder(nn.Module):
    """Model 2 as the original `SpaceTimeViViT`: the spatial ViT mapped over frames."""

    cfg: dict
    num_classes: int

    @nn.compact
    def __call__(self, video):
        c = self.cfg
        x = _tubelets(video, c["patch"], c["hidden"])
        b, t, h, w, d = x.shape
        x = x.reshape(b, t, h * w, d)
        classifier = c["classifier"]

        class Spatial(nn.Module):
            @nn.compact
            def __call__(self, frame):  # [b, s, d]
                if classifier == "token":
                    frame = _cls(self, frame, "cls_SpatialTransformer")
                frame = RefTransformer(
                    c["mlp"], c["layers"], c["heads"], "spacetime", name="SpatialTransformer"
                )(frame)
                return _pool(frame, classifier)

        per_frame = nn.vmap(
            Spatial,
            in_axes=1,
            out_axes=1,
            variable_axes={"params": None},
            split_rngs={"params": False},
        )
        # The vmapped module's parameters are merged into this level of the tree below.
        x = per_frame(name="spatial")(x)  # [b, t, d]
        if c.get("spatial_only_baseline"):
            x = x.mean(axis=1)
        else:
            if classifier == "token":
                x = _cls(self, x, "cls_TemporalTransformer")
            x = RefTransformer(
                c["mlp"],
                c["temporal_layers"],
                c["heads"],
                "spacetime",
                name="TemporalTransformer",
            )(x)
            x = _pool(x, classifier)
        return nn.Dense(self.num_classes, name="output_projection")(x)


def to_reference_params(params, model_kind):
    """Re-nests vivit_jax parameters for the reference (only Model 2's vmap wrapper differs)."""
    params = jax.tree.map(np.asarray, params)
    if model_kind != "factorized_encoder":
        return params
    params = dict(params)
    spatial = {"SpatialTransformer": params.pop("SpatialTransformer")}
    if "cls_SpatialTransformer" in params:
        spatial["cls_SpatialTransformer"] = params.pop("cls_SpatialTransformer")
    params["spatial"] = spatial
    return params
