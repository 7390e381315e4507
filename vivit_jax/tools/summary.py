"""Parameter count and forward GFLOPs of a configured ViViT, without allocating its parameters.

    python -m vivit_jax.tools.summary --config=configs/demo.py [--config.model.num_layers=24]

GFLOPs come from XLA's cost analysis of the lowered forward pass for one clip, with a
multiply-add counted as one FLOP (the paper's convention: XLA's count divided by two).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vivit_jax.models import create_model


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """What `summarize` measures.

    Attributes:
      num_params: Number of parameters.
      gflops: Forward GFLOPs for one clip (multiply-add = 1 FLOP).
      input_shape: The clip shape `(T, H, W, C)` measured.
      param_shapes: Parameter tree of `jax.ShapeDtypeStruct`s.
    """

    num_params: int
    gflops: float
    input_shape: tuple[int, ...]
    param_shapes: dict

    def line(self) -> str:
        t, h, w = self.input_shape[:3]
        return (
            f"{self.num_params / 1e6:.3f} M parameters, {self.gflops:.1f} GFLOPs per "
            f"{t}x{h}x{w} clip (multiply-add = 1 FLOP)"
        )


def count_params(params) -> int:
    """Number of scalars in a parameter tree (arrays or shape structs)."""
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def forward_gflops(model, params, input_shape) -> float:
    """XLA's FLOP count of one forward pass over one clip, divided by two (multiply-adds).

    Counts the architecture as the paper does: every token through every block, also where the
    model's last block computes the class token alone (`model.last_block_cls_only`).
    """
    model = model.clone(last_block_cls_only=False)
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    lowered = jax.jit(lambda p, v: model.apply({"params": p}, v, train=False)).lower(params, x)
    return float(lowered.cost_analysis()["flops"]) / 2e9


def summarize(model_config, num_classes: int, input_shape, dtype="float32") -> ModelSummary:
    """Counts parameters and GFLOPs of `create_model(model_config, num_classes)` on one clip.

    Args:
      model_config: The original `config.model`.
      num_classes: Output classes.
      input_shape: `(T, H, W, 3)` of one clip.
      dtype: Compute dtype (`config.model_dtype_str`).
    """
    model = create_model(model_config, num_classes, dtype=dtype)
    dummy = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    params = jax.eval_shape(
        lambda v: model.init(jax.random.key(0), v, train=False)["params"], dummy
    )
    return ModelSummary(
        num_params=count_params(params),
        gflops=forward_gflops(model, params, input_shape),
        input_shape=tuple(input_shape),
        param_shapes=params,
    )


def summarize_experiment(config) -> ModelSummary:
    """`summarize` for an experiment config (`model`, `dataset_configs`, `model_dtype_str`).

    Raises:
      ValueError: the config is invalid, or does not say its number of classes.
    """
    from vivit_jax import config_lib

    config = config_lib.complete_config(config)
    ds = config.dataset_configs
    if ds.num_classes is None:
        raise ValueError(
            "dataset_configs.num_classes is not set, so the classifier's size is unknown; pass "
            "--config.dataset_configs.num_classes=<classes>."
        )
    input_shape = (ds.num_frames, ds.crop_size, ds.crop_size, 3)
    return summarize(config.model, ds.num_classes, input_shape, dtype=config.model_dtype_str)


def _print_tree(tree, indent: int = 0) -> None:
    for name, sub in tree.items():
        if isinstance(sub, dict):
            print(f"{' ' * indent}{name}/  ({count_params(sub):,})")
            _print_tree(sub, indent + 2)
        else:
            print(f"{' ' * indent}{name} {tuple(sub.shape)}")


def main(argv) -> None:
    del argv
    from absl import flags

    config = flags.FLAGS.config
    try:
        summary = summarize_experiment(config)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if flags.FLAGS.tree:
        _print_tree(summary.param_shapes)
    print(f"{config.experiment_name or 'model'}: {summary.line()}")


if __name__ == "__main__":
    from absl import app, flags

    from vivit_jax import config_files

    config_files.define_config_flag()
    flags.DEFINE_bool("tree", False, "Also print the parameter tree with shapes.")
    flags.mark_flag_as_required("config")
    app.run(main)
