"""The experiment config: every key, its default, validation, and epochs → steps.

`complete_config(user_config)` is the one place defaults live. It returns the full, locked config:
`default_config()` updated with the user's keys, where an unknown or misspelt key is an error that
names it. The keys are those of Scenic's ViViT configs (`scenic/projects/vivit/configs/*`), so an
original config runs with at most its dataset paths changed; keys that the original trainer read
but that do nothing here (`trainer_name`, `xprof`, ...) are accepted and ignored.

Sub-configs come from the package that reads them:
  model.*            `vivit_jax.models.default_model_config()`
  dataset_configs.*  `vivit_jax.data.config.default_dataset_configs()`
  init_from.*        `default_init_from_config()` below (read by `vivit_jax.checkpoints`)

Keys that are ours (not in the original):
  grad_accum_steps (1): split each batch into this many micro-batches whose gradients are summed
    before one optimiser step (same maths as one big batch; for large batches on small devices).
  sharding.model_axis_size (1): devices on the mesh's 'model' axis; the rest form 'data'. Above 1,
    parameters and optimiser state are sharded FSDP-style (see `vivit_jax.sharding`).
  sharding.fsdp_min_size (2**16): arrays with fewer elements stay replicated.
  max_checkpoints_to_keep (3): older checkpoints are deleted.
  eval_at_start (False): evaluate once before the first step.
  resume_mismatch_ok (False): resume from a workdir whose checkpoints were written with different
    experiment-defining keys (`vivit_jax.checkpoints.fingerprint.FINGERPRINT_KEYS`); refused otherwise.
  freeze.backbone (False): frozen-backbone fine-tuning. True trains only the head (`pre_logits`,
    `output_projection`: a linear probe) and the last `freeze.train_last_blocks` encoder blocks;
    every other parameter keeps its value and has no optimiser state (`vivit_jax.optim.freeze`).
  freeze.train_last_blocks (0): encoder blocks trained with a frozen backbone, counted from the
    end of the network: Models 1, 3, 4 the last blocks of `Transformer`; Model 2 the temporal
    encoder's blocks first, then the spatial encoder's (so 5 of a 12 + 4 model are the 4 temporal
    blocks and the last spatial one). An encoder with a trained block also trains its
    `encoder_norm`; position embeddings, class tokens and the tokeniser stay frozen.

Multi-view test (Scenic's keys): `multicrop_softmax_logits` (False) averages the views'
softmax probabilities instead of their logits (per head for the multi-head model);
`multicrop_clips_per_device` (2) views of each video go through the model at a time, bounding
memory. See `vivit_jax.evaluate`.
"""

from __future__ import annotations

import ml_collections
from absl import logging

from vivit_jax import optim
from vivit_jax.configdicts import merge_locked, require, unknown_key_error
from vivit_jax.data import config as data_config
from vivit_jax.models import complete_model_config, default_model_config

ConfigDict = ml_collections.ConfigDict

# `config.model_name` values and their loss.
MODEL_NAMES = (
    "vivit_classification",
    "vivit_multilabel_classification",
    "vivit_multihead_classification",
)
MULTIHEAD = "vivit_multihead_classification"
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
LR_FACTORS = (
    "constant",
    "linear_warmup",
    "cosine_decay",
    "linear_decay",
    "rsqrt_decay",
    "decay_every",
    "piecewise_constant",
)
# Scenic's Kinetics and SSv2 configs contain `config.datset_configs = ConfigDict()`, an empty typo.
_EMPTY_TYPO_KEYS = ("datset_configs",)


def default_init_from_config() -> ConfigDict:
    """`config.init_from`: fine-tuning from an image or video checkpoint.

    checkpoint_path (None): no fine-tuning when None.
    checkpoint_format ('scenic'): 'scenic', 'big_vision', 'vit', 'orbax', ... (see
      `vivit_jax.checkpoints`).
    model_config (None): the checkpoint's own config (free-form, e.g. `model.classifier`).
    classifier_type ('token'): big_vision checkpoints' classifier.
    restore_positional_embedding (True), restore_input_embedding (True),
    positional_embed_size_change ('tile'): 'tile', 'resize', 'resize_tile'.
    """
    try:  # The checkpoints package owns these keys once it provides them.
        from vivit_jax.checkpoints import default_init_from_config as from_checkpoints
    except ImportError:
        from_checkpoints = None
    if from_checkpoints is not None:
        return from_checkpoints()
    return ConfigDict(
        dict(
            checkpoint_path=None,
            checkpoint_format="scenic",
            model_config=None,
            classifier_type="token",
            restore_positional_embedding=True,
            restore_input_embedding=True,
            positional_embed_size_change="tile",
        )
    )


def default_lr_configs() -> ConfigDict:
    """`config.lr_configs`, Scenic's compound schedule (see `vivit_jax.optim.learning_rate_fn`)."""
    placeholder = ml_collections.config_dict.placeholder
    return ConfigDict(
        dict(
            learning_rate_schedule="compound",
            factors="constant",
            base_learning_rate=0.1,
            warmup_steps=0,
            warmup_alpha=0.0,
            steps_per_cycle=placeholder(int),  # None: the total number of steps.
            total_steps=placeholder(int),
            start_decay_step=0,
            t_mul=1.0,
            m_mul=1.0,
            alpha=0.0,
            end_learning_rate=0.0,
            timescale=10_000,
            steps_per_decay=placeholder(int),
            decay_factor=placeholder(float),
            decay_events=placeholder(object),
            decay_factors=placeholder(object),
        )
    )


def default_optimizer_configs() -> ConfigDict:
    """`config.optimizer_configs`: Scenic's keys and defaults for each optimizer."""
    return ConfigDict(
        dict(momentum=0.9, weight_decay=0.0, beta1=0.9, beta2=0.999, epsilon=1e-8, nesterov=False)
    )


def default_config() -> ConfigDict:
    """Every key an experiment config may hold, with its default."""
    c = ConfigDict()
    c.experiment_name = ""
    c.trainer_name = "vivit_trainer"  # Accepted; there is one trainer.
    c.model_name = "vivit_classification"
    c.model = default_model_config()
    c.model_dtype_str = "float32"
    # Data.
    c.dataset_name = ml_collections.config_dict.placeholder(str)
    c.dataset_configs = data_config.default_dataset_configs()
    c.data_dtype_str = "float32"
    c.batch_size = 64
    c.eval_batch_size = ml_collections.config_dict.placeholder(int)  # None: batch_size.
    c.rng_seed = 0
    # Optimisation.
    c.optimizer = "momentum"
    c.optimizer_configs = default_optimizer_configs()
    c.lr_configs = default_lr_configs()
    c.num_training_epochs = ml_collections.config_dict.placeholder(float)
    c.num_training_steps = ml_collections.config_dict.placeholder(int)
    c.max_grad_norm = ml_collections.config_dict.placeholder(float)
    c.l2_decay_factor = ml_collections.config_dict.placeholder(float)
    c.label_smoothing = ml_collections.config_dict.placeholder(float)
    c.mixup = ConfigDict(dict(alpha=0.0, bind_to="device", image_format="NTHWC"))
    c.explicit_weight_decay = ml_collections.config_dict.placeholder(float)  # Must stay None.
    c.sam_rho = ml_collections.config_dict.placeholder(float)  # Not supported; must stay None.
    c.grad_accum_steps = 1
    c.sharding = ConfigDict(dict(model_axis_size=1, fsdp_min_size=2**16))
    c.freeze = ConfigDict(dict(backbone=False, train_last_blocks=0))
    # Initialisation.
    c.init_from = default_init_from_config()
    # Logging, evaluation and checkpoints. None: one epoch (or the log_eval_steps value).
    c.log_eval_steps = ml_collections.config_dict.placeholder(int)
    c.log_summary_steps = ml_collections.config_dict.placeholder(int)
    c.checkpoint_steps = ml_collections.config_dict.placeholder(int)
    c.steps_per_eval = ml_collections.config_dict.placeholder(int)  # None: the whole split.
    c.steps_per_test = ml_collections.config_dict.placeholder(int)
    c.eval_at_start = False
    c.max_checkpoints_to_keep = 3
    c.write_summary = True
    c.checkpoint = True
    c.resume_mismatch_ok = False
    c.debug_train = False
    c.debug_eval = False
    c.xprof = False
    c.confusion_matrix_metrics = False
    c.multicrop_clips_per_device = 2
    c.multicrop_softmax_logits = False
    _overridable_nones(c)
    return c


def _overridable_nones(c: ConfigDict) -> None:
    """Turns plain `None` defaults into typeless placeholders, so that `--config.key=value` can
    set them (ml_collections cannot parse an override of a field whose type is NoneType)."""
    for key in list(c.keys()):
        if isinstance(c[key], ConfigDict):
            _overridable_nones(c[key])
        elif c.get_type(key) is type(None):
            with c.ignore_type():
                c[key] = ml_collections.config_dict.placeholder(object)


def fill_defaults(user_config) -> ConfigDict:
    """`default_config()` updated with `user_config`, unvalidated and locked.

    What a config file's `get_config()` returns is filled in this way before the command line's
    `--config.key=value` overrides are applied, so that every key of `default_config()` can be
    overridden on any config file (Scenic's included), while a key the file or the command line
    misspells is still an error naming it.

    Raises:
      ValueError: naming an unknown key.
    """
    given = dict(user_config.items()) if user_config is not None else {}
    for typo in _EMPTY_TYPO_KEYS:
        if typo in given:
            value = given.pop(typo)
            if value:
                raise unknown_key_error("config", typo, default_config().keys())
            logging.warning(
                "Ignoring the empty config key config.%s (a typo in Scenic's configs).", typo
            )
    model = given.pop("model", None)
    datasets = given.pop("dataset_configs", None)
    config = default_config()
    merge_locked(config, given, "config", free_form=("config.init_from.model_config",))
    merge_locked(config.model, model, "config.model")
    with config.ignore_type():
        config.dataset_configs = data_config.merge(datasets)
    _none_strings_to_none(config, default_config())
    _overridable_nones(config)
    config.lock()
    return config


def _none_strings_to_none(config: ConfigDict, defaults: ConfigDict) -> None:
    """`--config.key=None` reaches a string-typed key as the text 'None': for a key whose
    default is None, that text means None (no path or name is spelt 'None')."""
    for key in list(config.keys()):
        value = config[key]
        default = defaults[key] if key in defaults else ...
        if isinstance(value, ConfigDict) and isinstance(default, ConfigDict):
            _none_strings_to_none(value, default)
        elif value == "None" and default is None:
            with config.ignore_type():
                config[key] = None


def complete_config(user_config) -> ConfigDict:
    """Returns the full experiment config: defaults updated with `user_config`, validated, locked.

    Args:
      user_config: `ConfigDict` (or dict) as returned by a config file's `get_config()`, after
        command-line overrides (complete or not).

    Returns:
      A locked `ConfigDict` holding every key of `default_config()`; `model` and
      `dataset_configs` are complete too. Keys left to be derived are filled: for the
      multi-head model, `dataset_configs.multi_label` (True) and `dataset_configs.num_classes`
      (the sum of `class_splits`).

    Raises:
      ValueError: naming the key, for an unknown key or a value that cannot work.
    """
    config = fill_defaults(user_config)
    config.unlock()
    ds = config.dataset_configs
    multihead = config.model_name == MULTIHEAD
    if ds.multi_label is None:
        ds.multi_label = multihead
    if multihead and ds.class_splits is not None and ds.num_classes is None:
        ds.num_classes = int(sum(ds.class_splits))
    with config.ignore_type():
        config.model = complete_model_config(config.model)
        config.dataset_configs = data_config.resolve(ds)
    validate_config(config)
    try:  # Bad init_from choices fail here, not after the data pipeline has started.
        from vivit_jax.checkpoints import resolve_init_from
    except ImportError:
        resolve_init_from = None
    if resolve_init_from is not None:
        resolve_init_from(config.init_from)
    config.lock()
    return config


def validate_config(c: ConfigDict) -> None:
    """Checks values that do not depend on the dataset; errors name the key."""
    require(
        bool(c.dataset_name),
        "Set config.dataset_name, e.g. 'moving_shapes' (built-in; build it with "
        "`python -m vivit_jax.data.build --dataset=moving_shapes`), 'kinetics400' or "
        "'video_tfrecord_dataset' (DMVR records, as in Scenic's configs).",
    )
    require(
        c.model_name in MODEL_NAMES,
        f"config.model_name={c.model_name!r} is not one of {MODEL_NAMES}.",
    )
    _validate_heads(c)
    require(
        isinstance(c.multicrop_clips_per_device, int) and c.multicrop_clips_per_device > 0,
        f"config.multicrop_clips_per_device must be a positive integer, got "
        f"{c.multicrop_clips_per_device!r}.",
    )
    _validate_optimizer(c)
    for key in ("batch_size", "grad_accum_steps", "max_checkpoints_to_keep"):
        require(
            isinstance(c[key], int) and c[key] > 0,
            f"config.{key} must be a positive integer, got {c[key]!r}.",
        )
    require(
        c.batch_size % c.grad_accum_steps == 0,
        f"config.batch_size={c.batch_size} is not divisible by config.grad_accum_steps="
        f"{c.grad_accum_steps}.",
    )
    require(
        c.num_training_steps is not None or c.num_training_epochs is not None,
        "Set config.num_training_steps or config.num_training_epochs.",
    )
    require(
        not c.explicit_weight_decay,
        "config.explicit_weight_decay is not supported; use optimizer='adamw' with "
        "optimizer_configs.weight_decay (decoupled, scaled by the learning rate) instead.",
    )
    require(
        c.sam_rho is None, "config.sam_rho (SAM) is not supported; remove it or set it to None."
    )
    require(
        c.mixup.alpha is None or c.mixup.alpha >= 0.0,
        f"config.mixup.alpha must be >= 0, got {c.mixup.alpha!r}.",
    )
    require(
        c.label_smoothing is None or 0.0 <= c.label_smoothing < 1.0,
        f"config.label_smoothing must be in [0, 1), got {c.label_smoothing!r}.",
    )
    _validate_ranges(c)
    optim.validate_freeze(c)  # The freeze keys' meaning lives with the optimiser.
    require(
        isinstance(c.sharding.model_axis_size, int) and c.sharding.model_axis_size > 0,
        f"config.sharding.model_axis_size must be a positive integer, got {c.sharding.model_axis_size!r}.",
    )
    for key in ("log_eval_steps", "log_summary_steps", "checkpoint_steps"):
        require(
            c[key] is None or c[key] > 0, f"config.{key} must be positive or None, got {c[key]!r}."
        )
    require(
        c.model_dtype_str in ("float32", "bfloat16", "float16"),
        f"config.model_dtype_str={c.model_dtype_str!r} is not one of float32, bfloat16, float16.",
    )


def _validate_heads(c: ConfigDict) -> None:
    """The multi-head model's dataset keys."""
    if c.model_name == MULTIHEAD:
        require(
            c.dataset_configs.class_splits is not None,
            "config.model_name='vivit_multihead_classification' needs "
            "dataset_configs.class_splits (the head sizes, e.g. [300, 97] for EPIC-Kitchens "
            "nouns and verbs).",
        )
        require(
            bool(c.dataset_configs.multi_label),
            "config.model_name='vivit_multihead_classification' reads one label per head as a "
            "multi-hot vector over the concatenated heads: set dataset_configs.multi_label=True "
            "(records hold e.g. [noun, 300 + verb] in clip/label/index).",
        )


def _validate_optimizer(c: ConfigDict) -> None:
    """The optimiser's name and the schedule's factors."""
    require(
        c.optimizer in OPTIMIZERS, f"config.optimizer={c.optimizer!r} is not one of {OPTIMIZERS}."
    )
    require(
        c.lr_configs.learning_rate_schedule == "compound",
        f"config.lr_configs.learning_rate_schedule={c.lr_configs.learning_rate_schedule!r}: only "
        "'compound' exists (as in Scenic).",
    )
    for factor in (f.strip() for f in c.lr_configs.factors.split("*")):
        require(
            factor in LR_FACTORS,
            f"config.lr_configs.factors={c.lr_configs.factors!r}: unknown factor {factor!r}; "
            f"known: {LR_FACTORS}.",
        )


def _validate_ranges(c: ConfigDict) -> None:
    """Rates, counts and coefficients that cannot be negative (or zero)."""
    lr, opt = c.lr_configs, c.optimizer_configs
    checks = [
        ("lr_configs.base_learning_rate", lr.base_learning_rate, lambda v: v >= 0, ">= 0"),
        ("lr_configs.warmup_steps", lr.warmup_steps, lambda v: v >= 0, ">= 0"),
        ("lr_configs.end_learning_rate", lr.end_learning_rate, lambda v: v >= 0, ">= 0"),
        ("optimizer_configs.weight_decay", opt.weight_decay, lambda v: v >= 0, ">= 0"),
        ("optimizer_configs.momentum", opt.momentum, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("optimizer_configs.beta1", opt.beta1, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("optimizer_configs.beta2", opt.beta2, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("optimizer_configs.epsilon", opt.epsilon, lambda v: v >= 0, ">= 0"),
        ("num_training_steps", c.num_training_steps, lambda v: v > 0, "> 0"),
        ("num_training_epochs", c.num_training_epochs, lambda v: v > 0, "> 0"),
        ("eval_batch_size", c.eval_batch_size, lambda v: v > 0, "> 0"),
        ("max_grad_norm", c.max_grad_norm, lambda v: v > 0, "> 0 (or None: no clipping)"),
        ("l2_decay_factor", c.l2_decay_factor, lambda v: v >= 0, ">= 0"),
        ("steps_per_eval", c.steps_per_eval, lambda v: v > 0, "> 0 (or None: whole split)"),
        ("sharding.fsdp_min_size", c.sharding.fsdp_min_size, lambda v: v >= 0, ">= 0"),
    ]
    for key, value, ok, want in checks:
        if value is None:
            continue
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool) and ok(value),
            f"config.{key} must be {want}, got {value!r}.",
        )


def training_steps(config: ConfigDict, num_train_examples: int) -> tuple[int, int]:
    """Returns `(total_steps, steps_per_epoch)`, as Scenic computes them.

    `num_training_steps` wins over `num_training_epochs`; an epoch is
    `num_train_examples // batch_size` steps (at least one).
    """
    steps_per_epoch = max(1, num_train_examples // config.batch_size)
    if config.num_training_steps is not None:
        total = int(config.num_training_steps)
    else:
        total = int(config.num_training_epochs * steps_per_epoch)
    require(total > 0, f"The run has {total} training steps; check config.num_training_*.")
    return total, steps_per_epoch
