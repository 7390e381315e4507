"""What training and evaluation share: the model, the optimiser, the train state's shapes and
shardings, and the data, built once from the config (`build_experiment`).

Both `vivit_jax.train` and `vivit_jax.evaluate` import this module; neither imports the other.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vivit_jax import config_lib, optim, sharding, steps
from vivit_jax.backends import PLAIN, Backend
from vivit_jax.models import create_model, validate_input_shape


@dataclasses.dataclass
class Experiment:
    """Everything built from the config before the loop; shared with evaluation."""

    config: ml_collections.ConfigDict
    mesh: jax.sharding.Mesh
    dataset: Any
    model: Any
    tx: Any
    schedule: Callable
    total_steps: int
    steps_per_epoch: int
    num_classes: int
    input_shape: tuple
    abstract_state: Any
    state_shardings: Any
    init_rng: jax.Array
    train_rng: jax.Array
    backend: Backend = PLAIN


def default_dataset_fn(config, *, mesh, start_step):
    """`vivit_jax.data.get_dataset`: the config's dataset, global batches on `mesh`."""
    from vivit_jax.data import get_dataset

    return get_dataset(config, mesh=mesh, start_step=start_step)


def build_experiment(config, *, mesh, dataset, backend: Backend = PLAIN) -> Experiment:
    """Model, optimiser, schedule and the (abstract) train state for `dataset`.

    Args:
      config: The complete experiment config (`config_lib.complete_config`).
      mesh: The device mesh (`sharding.create_mesh`).
      dataset: The data (`meta_data` gives classes, input shape and train size).
      backend: What the platform adds (`vivit_jax.backends.for_platform`).
    """
    meta = dataset.meta_data
    num_classes = int(meta["num_classes"])
    input_shape = tuple(int(d) for d in meta["input_shape"][-4:])
    validate_input_shape(config.model, input_shape)
    model = create_model(
        config.model,
        num_classes,
        dtype=config.model_dtype_str,
        fused_attention=backend.fused_attention,
    )
    total_steps, steps_per_epoch = config_lib.training_steps(config, meta["num_train_examples"])
    schedule = optim.learning_rate_fn(config.lr_configs, total_steps)
    tx = optim.create_optimizer(config, schedule)
    init_rng, train_rng = jax.random.split(jax.random.key(config.rng_seed))

    abstract_state = jax.eval_shape(functools.partial(init_state, model, tx, input_shape), init_rng)
    shardings = sharding.state_shardings(abstract_state, mesh, config.sharding.fsdp_min_size)
    return Experiment(
        config=config,
        mesh=mesh,
        dataset=dataset,
        model=model,
        tx=tx,
        schedule=schedule,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        num_classes=num_classes,
        input_shape=input_shape,
        abstract_state=abstract_state,
        state_shardings=shardings,
        init_rng=init_rng,
        train_rng=train_rng,
        backend=backend,
    )


def init_state(model, tx, input_shape, rng) -> steps.TrainState:
    """A fresh `TrainState` of `model` on one clip of `input_shape` (what every jit initialises)."""
    dummy = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    params = model.init({"params": rng}, dummy, train=False)["params"]
    return steps.TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))


def initial_state(exp: Experiment) -> steps.TrainState:
    """A fresh state, fine-tuned from `config.init_from.checkpoint_path` if set."""
    init = jax.jit(
        functools.partial(init_state, exp.model, exp.tx, exp.input_shape),
        out_shardings=exp.state_shardings,
    )
    state = init(exp.init_rng)
    if exp.config.init_from.checkpoint_path:
        from vivit_jax.checkpoints import init_from_pretrained

        params = init_from_pretrained(
            jax.device_get(state.params), exp.config, input_shape=exp.input_shape[:3]
        )
        params = jax.device_put(params, exp.state_shardings.params)
        opt_state = jax.jit(exp.tx.init, out_shardings=exp.state_shardings.opt_state)(params)
        state = state.replace(params=params, opt_state=opt_state)
        logging.info("Initialised from %s.", exp.config.init_from.checkpoint_path)
    return state


def log_layout(exp: Experiment) -> None:
    """Which rows of each global batch this process feeds, and the state's bytes per device."""
    b = exp.config.batch_size
    blocks = [
        index[0].indices(b)[:2]
        for index in sharding.batch_sharding(exp.mesh)
        .addressable_devices_indices_map((b,))
        .values()
    ]
    total, per_device = sharding.per_device_bytes(exp.abstract_state, exp.state_shardings)
    logging.info(
        "Process %d of %d reads rows [%d, %d) of each global batch of %d; train state %.1f MiB, "
        "%.1f MiB per device.",
        jax.process_index(),
        jax.process_count(),
        min(lo for lo, _ in blocks),
        max(hi for _, hi in blocks),
        b,
        total / 2**20,
        per_device / 2**20,
    )


def log_model_summary(exp: Experiment, writer) -> None:
    """Parameter count and forward GFLOPs, logged and written as step-0 scalars."""
    num_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(exp.abstract_state.params)))
    scalars = {"num_params": num_params}
    try:
        from vivit_jax.tools.summary import forward_gflops

        scalars["gflops"] = forward_gflops(exp.model, exp.abstract_state.params, exp.input_shape)
    except Exception as e:  # GFLOPs are informative only; never stop a run for them.
        logging.warning("Could not count GFLOPs: %s", e)
    logging.info(
        "Model: %.3f M parameters, %s GFLOPs per %s clip.",
        num_params / 1e6,
        f"{scalars['gflops']:.2f}" if "gflops" in scalars else "?",
        "x".join(map(str, exp.input_shape[:3])),
    )
    writer.write_scalars(0, scalars)


def check_batch_sizes(config, mesh) -> None:
    """The train and eval batches split evenly over the mesh's 'data' axis (or raise)."""
    sharding.check_batch_size(
        config.batch_size // config.grad_accum_steps,
        mesh,
        "config.batch_size / config.grad_accum_steps"
        if config.grad_accum_steps > 1
        else "config.batch_size",
    )
    sharding.check_batch_size(
        config.eval_batch_size or config.batch_size, mesh, "config.eval_batch_size"
    )
