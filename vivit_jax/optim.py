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
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


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
        `max_grad_norm`).
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
    return tx
