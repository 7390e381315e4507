"""Learning-rate schedule and optimiser: Scenic's compound schedule and optimisers, in optax.

The schedule is Scenic's `compound_lr_scheduler` (`scenic/train_lib/lr_schedules.py`): the product
of the factors named in `lr_configs.factors`, e.g. 'constant * linear_warmup * cosine_decay'
(the paper's recipe). The optimisers are those `flax.optim` gave the original:

  'momentum' / 'nesterov': SGD with (Nesterov) momentum `optimizer_configs.momentum` (0.9);
    `weight_decay` is added to the gradient (coupled L2), as `flax.optim.Momentum` did.
  'sgd': plain gradient descent.
  'adam' / 'adamw': Adam; `weight_decay` is decoupled and scaled by the learning rate, as
    `flax.optim.Adam` did (i.e. AdamW).

`max_grad_norm` clips the global norm of the (whole-batch) gradient first. Scenic clipped each
device's gradient before averaging, which makes the result depend on the number of devices; we do
not copy that.

Frozen-backbone fine-tuning (`config.freeze`, ours): with `freeze.backbone=True` only the head
(`pre_logits`, `output_projection`) and the last `freeze.train_last_blocks` encoder blocks
(`trainable_blocks`) are updated. The optimiser is an `optax.multi_transform`: the trainable
leaves go through the whole transformation above (so clipping measures their gradient alone and
weight decay touches only them), the frozen leaves through `optax.set_to_zero`, which keeps no
state: no momentum or Adam moments are stored for a frozen parameter.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
# Parameters outside the encoders that a frozen backbone still trains.
HEAD_PARAMS = ("pre_logits", "output_projection")
TRAINABLE, FROZEN = "trainable", "frozen"


def _cosine_decay(step, c: ml_collections.ConfigDict, total_steps: int):
    steps_per_cycle = c.steps_per_cycle or total_steps
    warmup = c.warmup_steps or 0
    adjusted = jnp.maximum(0.0, step - (warmup + (c.start_decay_step or 0)))
    cycle_total = c.total_steps or steps_per_cycle
    # Scenic shortens each cycle by the warmup so that the decay ends on the last step.
    steps_per_cycle = steps_per_cycle - int(warmup / (cycle_total / steps_per_cycle))
    progress = adjusted / float(max(steps_per_cycle, 1))
    if c.t_mul == 1.0:
        restart = jnp.floor(progress)
        progress = progress - restart
    else:
        restart = jnp.floor(jnp.log(1.0 - progress * (1.0 - c.t_mul)) / jnp.log(c.t_mul))
        done = (1.0 - c.t_mul**restart) / (1.0 - c.t_mul)
        progress = (progress - done) / c.t_mul**restart
    cosine = jnp.maximum(0.0, 0.5 * c.m_mul**restart * (1.0 + jnp.cos(jnp.pi * (progress % 1.0))))
    return (1.0 - c.alpha) * cosine + c.alpha


def learning_rate_fn(lr_configs: ml_collections.ConfigDict, total_steps: int) -> Schedule:
    """Scenic's compound schedule: step → learning rate (float32).

    Args:
      lr_configs: `config.lr_configs`. `steps_per_cycle` None means `total_steps`.
      total_steps: Length of the run, used where the config leaves a length unset.

    Returns:
      A jittable function of the (integer) step.
    """
    c = lr_configs
    factors = [f.strip() for f in c.factors.split("*")]

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        ratio = jnp.asarray(1.0, jnp.float32)
        for name in factors:
            if name == "constant":
                ratio *= c.base_learning_rate
            elif name == "linear_warmup":
                if c.warmup_steps > 0:
                    alpha = c.warmup_alpha
                    ratio *= jnp.minimum(1.0, alpha + step * (1.0 - alpha) / c.warmup_steps)
            elif name == "cosine_decay":
                ratio *= _cosine_decay(step, c, total_steps)
            elif name == "linear_decay":
                total = c.total_steps or total_steps
                warmup = c.warmup_steps or 0
                progress = jnp.maximum(0.0, (step - warmup) / float(max(total - warmup, 1)))
                ratio = (ratio - c.end_learning_rate) * jnp.maximum(1.0 - progress, 0.0)
                ratio += c.end_learning_rate
            elif name == "rsqrt_decay":
                warmup = c.warmup_steps or 0
                shift = c.timescale - warmup
                ratio *= jnp.where(
                    warmup < step, jnp.sqrt(c.timescale) / jnp.sqrt(step + shift), 1.0
                )
            elif name == "decay_every":
                ratio *= c.decay_factor ** jnp.floor(step / c.steps_per_decay)
            elif name == "piecewise_constant":
                bounds = jnp.asarray(c.decay_events, jnp.float32)
                values = jnp.asarray([1.0] + list(c.decay_factors), jnp.float32)
                ratio *= values[jnp.sum(bounds < step)]
            else:
                raise ValueError(f"config.lr_configs.factors: unknown factor {name!r}.")
        return ratio

    return schedule


def create_optimizer(config: ml_collections.ConfigDict, schedule: Schedule):
    """The optax transformation for `config.optimizer` with the schedule and clipping.

    Args:
      config: The complete experiment config (`optimizer`, `optimizer_configs`,
        `max_grad_norm`, `freeze`).
      schedule: From `learning_rate_fn`.

    Returns:
      An `optax.GradientTransformation`.
    """
    oc = config.optimizer_configs
    name = config.optimizer
    if name in ("momentum", "nesterov"):
        tx = optax.chain(
            optax.add_decayed_weights(oc.weight_decay) if oc.weight_decay else optax.identity(),
            optax.sgd(schedule, momentum=oc.momentum, nesterov=name == "nesterov" or oc.nesterov),
        )
    elif name == "sgd":
        tx = optax.sgd(schedule)
    elif name in ("adam", "adamw"):
        tx = optax.adamw(
            schedule, b1=oc.beta1, b2=oc.beta2, eps=oc.epsilon, weight_decay=oc.weight_decay
        )
    else:
        raise ValueError(f"config.optimizer={name!r} is not supported.")
    if config.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
    return freeze(tx, config)


def encoder_blocks(model_config) -> list[tuple[str, int]]:
    """`(encoder, block index)` of every encoder block in network order (input first).

    Model 2 (`factorized_encoder`) runs `SpatialTransformer`'s blocks before
    `TemporalTransformer`'s (none with `spatial_only_baseline`); the others have `Transformer`.
    """
    att = model_config.attention_config
    if att.type != "factorized_encoder":
        return [("Transformer", i) for i in range(model_config.num_layers)]
    blocks = [("SpatialTransformer", i) for i in range(model_config.spatial_transformer.num_layers)]
    if not att.spatial_only_baseline:
        n = model_config.temporal_transformer.num_layers
        blocks += [("TemporalTransformer", i) for i in range(n)]
    return blocks


def validate_freeze(config) -> None:
    """Checks `config.freeze` against `config.model`; errors name the key.

    Raises:
      ValueError: a non-bool `backbone`, a negative or too large `train_last_blocks`, or
        blocks to train without a frozen backbone.
    """
    f = config.freeze
    if not isinstance(f.backbone, bool):
        raise ValueError(f"config.freeze.backbone must be True or False, got {f.backbone!r}.")
    k = f.train_last_blocks
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"config.freeze.train_last_blocks must be an integer >= 0, got {k!r}.")
    n = len(encoder_blocks(config.model))
    if k > n:
        raise ValueError(
            f"config.freeze.train_last_blocks={k} exceeds the model's {n} encoder blocks."
        )
    if k and not f.backbone:
        raise ValueError(
            f"config.freeze.train_last_blocks={k} needs config.freeze.backbone=True (without it "
            "every parameter trains)."
        )


def trainable_blocks(model_config, train_last_blocks: int) -> list[tuple[str, int]]:
    """The last `train_last_blocks` blocks of `encoder_blocks`, counted from the network's end
    (for Model 2: the temporal encoder's last blocks first, then the spatial encoder's)."""
    blocks = encoder_blocks(model_config)
    return blocks[len(blocks) - train_last_blocks :] if train_last_blocks else []


def freeze_labels(params, config):
    """`params`' tree with each leaf labelled `TRAINABLE` or `FROZEN` by `config.freeze`.

    Trainable: `HEAD_PARAMS`, the `trainable_blocks`, and the `encoder_norm` of every encoder
    with a trainable block (it comes after that block). Everything else (tokeniser, position
    embeddings, class tokens, earlier blocks) is frozen. Without `freeze.backbone` all is
    trainable.
    """
    if not config.freeze.backbone:
        return jax.tree.map(lambda _: TRAINABLE, params)
    blocks = trainable_blocks(config.model, config.freeze.train_last_blocks)
    trained = {f"{encoder}/encoderblock_{i}" for encoder, i in blocks}
    trained |= {f"{encoder}/encoder_norm" for encoder, _ in blocks}

    def label(path, _):
        keys = [getattr(k, "key", str(k)) for k in path]
        if keys[0] in HEAD_PARAMS or "/".join(keys[:2]) in trained:
            return TRAINABLE
        return FROZEN

    return jax.tree_util.tree_map_with_path(label, params)


def freeze(tx: optax.GradientTransformation, config) -> optax.GradientTransformation:
    """`tx` for the trainable parameters of `config.freeze`, `set_to_zero` (no state) for the
    frozen ones; `tx` itself when nothing is frozen."""
    if not config.freeze.backbone:
        return tx
    return optax.multi_transform(
        {TRAINABLE: tx, FROZEN: optax.set_to_zero()},
        lambda params: freeze_labels(params, config),
    )
