"""Pieces shared by the experiment configs: imported, never copied.

Every config starts from `base_config()`: the complete default config (all keys of
`vivit_jax.config_lib.default_config()`), so any key can be overridden on the command line with
`--config.key=value`, and a misspelt key is an error naming it.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """All keys with their defaults (see `vivit_jax.config_lib`)."""
    from vivit_jax import config_lib

    return config_lib.default_config()


def cosine_schedule(
    config: ml_collections.ConfigDict, base_learning_rate: float, warmup_steps: int
) -> None:
    """The paper's schedule: constant × linear warmup × cosine decay to 0 at the last step.

    `lr_configs.steps_per_cycle` is left None, meaning the run's total number of steps.
    """
    config.lr_configs.learning_rate_schedule = "compound"
    config.lr_configs.factors = "constant * cosine_decay * linear_warmup"
    config.lr_configs.base_learning_rate = base_learning_rate
    config.lr_configs.warmup_steps = warmup_steps


def tiny_factorised_encoder(config: ml_collections.ConfigDict) -> None:
    """A seconds-long CPU version of a factorised-encoder config, for tests: hidden 32, one
    spatial and one temporal block, 8 frames of 16², 2 clips × 3 crops, 2 steps, no
    initialisation from a checkpoint, RandAugment and stochastic depth off."""
    config.experiment_name += "_tiny"
    ds = config.dataset_configs
    ds.num_frames = 8
    ds.min_resize = 20
    ds.crop_size = 16
    ds.num_test_clips = 2
    ds.test_batch_size = 8
    ds.examples_per_subset = None
    if config.dataset_name != "video_tfrecord_dataset":
        ds.num_classes = None  # Whatever the built dataset has.
    ds.augmentation_params.do_rand_augment = False
    m = config.model
    m.hidden_size = 32
    m.spatial_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    m.temporal_transformer.update(num_layers=1, num_heads=2, mlp_dim=64)
    m.patches.size = (8, 8, 2)
    m.stochastic_droplayer_rate = 0.0
    config.init_from.checkpoint_path = None
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_training_epochs = None
    config.num_training_steps = 2
    config.lr_configs.warmup_steps = 1
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
    config.write_summary = False


def tiny_model(config: ml_collections.ConfigDict, hidden: int = 64, layers: int = 2) -> None:
    """A CPU-sized ViViT Model 1 with 4×4×2 tubelets (for the demo and tests)."""
    m = config.model
    m.attention_config.type = "spacetime"
    m.hidden_size = hidden
    m.num_heads = 4
    m.mlp_dim = 2 * hidden
    m.num_layers = layers
    m.patches.size = (4, 4, 2)
    m.classifier = "gap"
    m.dropout_rate = 0.0
    m.attention_dropout_rate = 0.0
    m.temporal_encoding_config.method = "3d_conv"
    m.temporal_encoding_config.kernel_init_method = None


# ImageNet-21k ViT checkpoints, as the paper: the `.npz` files of
# github.com/google-research/vision_transformer, e.g. gs://vit_models/imagenet21k/ViT-B_16.npz
# (`gsutil cp` or https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz). Format
# 'vit' (pre-Linen names), which `checkpoint_format='auto'` recognises; big_vision and Scenic
# checkpoints load too. Set the path with `--config.init_from.checkpoint_path=...`.
VIT_CHECKPOINTS = {
    "B": "path/to/ViT-B_16.npz",
    "L": "path/to/ViT-L_16.npz",
    "H": "path/to/ViT-H_14.npz",
}


def parse_args(arg: str | None, known: tuple[str, ...], config_file: str) -> set[str]:
    """The comma-separated words after `--config=file.py:`; an unknown word is an error."""
    args = set(filter(None, (arg or "").split(",")))
    unknown = args - set(known)
    if unknown:
        raise ValueError(
            f"Unknown {config_file} argument(s) {sorted(unknown)}; known: {', '.join(known)}."
        )
    return args


def vit_model(config: ml_collections.ConfigDict, size: str, attention_type: str) -> None:
    """ViViT Model 1, 3 or 4 of ViT size `size` ('B', 'L', 'H'; see `vivit_jax.models.SIZES`).

    Classifier 'token' for Model 1, 'gap' for Models 3 and 4 (no single sequence for a CLS
    token); no pre-logits layer; dropout 0, as the paper and Scenic.
    """
    from vivit_jax.models import SIZES

    m = config.model
    m.update(SIZES[size])
    m.attention_config.type = attention_type
    m.classifier = "token" if attention_type == "spacetime" else "gap"
    _paper_model_defaults(m)


def factorised_encoder(config: ml_collections.ConfigDict, size: str, temporal_layers: int) -> None:
    """ViViT Model 2 (factorised encoder): a ViT-`size` spatial encoder, `temporal_layers` temporal
    layers of the same width (the paper's L_t), CLS tokens in both."""
    from vivit_jax.models import SIZES

    s = SIZES[size]
    m = config.model
    m.attention_config.type = "factorized_encoder"
    m.hidden_size = s["hidden_size"]
    stack = dict(num_heads=s["num_heads"], mlp_dim=s["mlp_dim"])
    m.spatial_transformer.update(num_layers=s["num_layers"], **stack)
    m.temporal_transformer.update(num_layers=temporal_layers, **stack)
    m.classifier = "token"
    _paper_model_defaults(m)


def _paper_model_defaults(m: ml_collections.ConfigDict) -> None:
    m.representation_size = None
    m.dropout_rate = 0.0
    m.attention_dropout_rate = 0.0
    m.patches.size = (16, 16, 2)
    m.temporal_encoding_config.method = "3d_conv"
    m.temporal_encoding_config.kernel_init_method = "central_frame_initializer"


def paper_training(
    config: ml_collections.ConfigDict,
    *,
    base_learning_rate: float,
    epochs: int,
    train_examples: int,
) -> None:
    """The paper's recipe (Arnab et al., ViViT, arXiv 2103.15691, appendix): SGD momentum 0.9,
    batch 64, global-norm clip 1, no weight decay, dropout 0 (set by the model helpers), `epochs`
    epochs of cosine decay after a linear warmup of 2.5 epochs.

    The warmup is in steps (`lr_configs` has no epoch unit), computed as Scenic does from
    `train_examples`, the training-set size the original configs assume; a copy of the data with
    another size shifts it slightly (e.g. 2.2 epochs for 240k Kinetics-400 videos instead of
    214,834). The decay always ends on the last step (`steps_per_cycle` None = all steps).
    """
    config.optimizer = "momentum"
    config.optimizer_configs.momentum = 0.9
    config.l2_decay_factor = None
    config.max_grad_norm = 1.0
    config.label_smoothing = None
    config.batch_size = 64
    config.num_training_epochs = epochs
    steps_per_epoch = train_examples // config.batch_size
    cosine_schedule(config, base_learning_rate, warmup_steps=int(2.5 * steps_per_epoch))


def video_data(
    config: ml_collections.ConfigDict,
    *,
    num_frames: int = 32,
    stride: int = 2,
    min_resize: int = 256,
    crop_size: int = 224,
    color_augment: bool = True,
) -> None:
    """Clip sampling, Scenic's train augmentation and the multi-view test of the paper.

    Train: `num_frames` frames at `stride` from a random offset, short side `min_resize`, scale
    jitter 0.9–1.33, random `crop_size` crop, flip (not for SSv2; see `random_flip`), colour
    jitter p=0.8 (Kinetics). Test: 4 clips × 3 spatial crops per video, logits averaged.
    """
    ds = config.dataset_configs
    ds.num_frames = num_frames
    ds.stride = stride
    ds.min_resize = min_resize
    ds.crop_size = crop_size
    ds.zero_centering = True
    ds.one_hot_labels = True
    ds.num_test_clips = 4
    ds.do_three_spatial_crops = True
    ds.do_multicrop_test = True
    ds.log_test_epochs = 5
    ds.test_batch_size = 8
    aug = ds.augmentation_params
    aug.do_jitter_scale = True
    aug.scale_min_factor = 0.9
    aug.scale_max_factor = 1.33
    aug.prob_scale_jitter = 1.0
    aug.do_color_augment = color_augment
    aug.prob_color_augment = 0.8
    aug.prob_color_drop = 0.1


def dmvr_records(
    config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    tables: dict[str, str],
    examples_per_subset: dict[str, int],
    base_dir: str = "/path/to/dataset",
) -> None:
    """Reads DMVR TFRecords (`tf.train.SequenceExample`, one JPEG per frame), as Scenic's configs.

    Set the folder with `--config.dataset_configs.base_dir=...`. The example counts are Scenic's
    and only checked against the records (a warning or error names a mismatch).
    """
    config.dataset_name = "video_tfrecord_dataset"
    ds = config.dataset_configs
    ds.base_dir = base_dir
    ds.tables = dict(tables)
    ds.examples_per_subset = dict(examples_per_subset)
    ds.num_classes = num_classes


def init_from_vit(
    config: ml_collections.ConfigDict, size: str, positional_embed_size_change: str = "tile"
) -> None:
    """Initialise from an ImageNet-21k ViT of size `size` (see `VIT_CHECKPOINTS`): the patch
    kernel becomes a tubelet (`model.temporal_encoding_config.kernel_init_method`), position
    embeddings are tiled over time (or resized), the head starts at zero."""
    init = config.init_from
    init.checkpoint_path = VIT_CHECKPOINTS[size]
    init.checkpoint_format = "auto"
    init.model_config = ml_collections.ConfigDict({"model": {"classifier": "token"}})
    init.restore_positional_embedding = True
    init.restore_input_embedding = True
    init.positional_embed_size_change = positional_embed_size_change


# Train / validation / test videos Scenic's configs assume (videos vanish from YouTube, so a
# current copy has other counts; only the DMVR reader checks them).
KINETICS_SIZES = {
    400: {"train": 214_834, "validation": 17_637, "test": 34_579},
    600: {"train": 363_213, "validation": 27_676, "test": 55_377},
}


def kinetics_data(config: ml_collections.ConfigDict, num_classes: int, dmvr: bool) -> None:
    """Kinetics-`num_classes` from this project's TFDS builder (`kinetics400`, `kinetics600`;
    build it with `python -m vivit_jax.data.build --dataset=kinetics400 --manual_dir=...`), or
    with `dmvr` from Scenic's DMVR records `{train,validation,test}.tfrecord@1024`."""
    video_data(config)
    config.dataset_configs.num_classes = num_classes
    if dmvr:
        dmvr_records(
            config,
            num_classes=num_classes,
            tables={s: f"{s}.tfrecord@1024" for s in ("train", "validation", "test")},
            examples_per_subset=KINETICS_SIZES[num_classes],
        )
    else:
        config.dataset_name = f"kinetics{num_classes}"
