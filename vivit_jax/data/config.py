"""The `config.dataset_configs` keys, their defaults, and their validation (TensorFlow-free).

Keys carry Scenic's names wherever Scenic has one (`scenic/projects/vivit/configs/*`), so an
original config's `dataset_configs` block works unchanged. `default_dataset_configs()` is the one
place the defaults live; the training config module fills missing keys from it and rejects keys
it does not know.
"""

from __future__ import annotations

import ml_collections

from vivit_jax.configdicts import merge_locked

# Keys of `dataset_configs` that the original configs set but that steer the trainer, not the
# input pipeline: `train.py` runs the multi-view test every `log_test_epochs` epochs when
# `do_multicrop_test`; `prefetch_to_device` is accepted so original configs load.
TRAINER_KEYS = ("do_multicrop_test", "log_test_epochs", "prefetch_to_device")

# DMVR records: the name Scenic gives the reader, and aliases we accept.
DMVR_DATASET_NAMES = ("video_tfrecord_dataset", "dmvr")


def default_augmentation_params() -> ml_collections.ConfigDict:
    """Train-time augmentation switches (`dataset_configs.augmentation_params`).

    Same keys and meaning as Scenic's `video_ops.additional_augmentations`. RandAugment takes
    priority over colour jitter: when both are on only RandAugment runs, as in the original.
    """
    return ml_collections.ConfigDict(
        {
            "do_jitter_scale": False,
            "scale_min_factor": 0.9,
            "scale_max_factor": 1.33,
            "prob_scale_jitter": 1.0,
            "do_color_augment": False,
            "prob_color_augment": 0.8,
            "prob_color_drop": 0.1,
            "do_rand_augment": False,
            "rand_augment_num_layers": 2,
            "rand_augment_magnitude": 15,
        }
    )


def default_dataset_configs() -> ml_collections.ConfigDict:
    """Returns every `config.dataset_configs` key with its default.

    Sampling and augmentation:
      num_frames (32): frames per clip.
      stride (2): temporal stride between sampled frames.
      min_resize (256): frames are resized so their short side is this.
      crop_size (224): square crop side (random in train, central in eval/test).
      num_test_clips (1): clips per video at test time, evenly spaced (1 = the central clip).
      do_three_spatial_crops (False): test views also take left/centre/right crops
        (top/middle/bottom for portrait frames), so views = num_test_clips * 3.
      zero_centering (True): values in [-1, 1]; otherwise [0, 1].
      random_flip (None): horizontal flip with p=0.5 in train. None = on, except for
        Something-Something-v2 (detected from the dataset name or DMVR table names), where
        left and right are part of the label.
      augmentation_params: see `default_augmentation_params`.
    Labels:
      one_hot_labels (False): `label` is float32 one-hot `[B, C]` instead of int32 `[B]`.
      multi_label (None): a record's several label indices become a float32 multi-hot `[B, C]`
        (DMVR `clip/label/index` with several values). None: True for
        `model_name='vivit_multihead_classification'`, else False.
      label_offset (0): subtracted from stored labels (1-indexed records).
      num_classes (None): required for DMVR records (for the multi-head model None means the
        sum of `class_splits`); checked against TFDS metadata otherwise.
      class_splits (None): for `model_name='vivit_multihead_classification'` (EPIC-Kitchens):
        the sizes of the heads, e.g. [300, 97]; the one output layer has sum(class_splits)
        logits, split in this order (Scenic's key). Labels are then multi-hot over the
        concatenation: a record's `clip/label/index` holds [noun, 300 + verb] and
        `multi_label=True`.
      split_names (None): names of the heads, e.g. ['noun', 'verb']; None = '1', '2', ...
    Splits and batching:
      train_split ('train'), eval_split ('validation'), test_split ('test').
      test_batch_size (None): videos per multi-view test batch; None = `config.eval_batch_size`.
      num_parallel_calls (-1): threads decoding and cropping clips in each process (Grain's
        `ReadOptions.num_threads`); -1: one per schedulable core.
      num_workers (0): worker processes that make the clips (Grain's `mp_prefetch`), each with
        `num_parallel_calls` threads; 0: in the training process. For accelerator hosts whose
        input needs more cores than threads of one process can use.
      prefetch (2): batches prepared ahead on the host (>= 0).
    Sources:
      data_dir (None): TFDS data directory; None = TFDS's default (~/tensorflow_datasets).
      base_dir, tables, examples_per_subset: DMVR records (dataset_name
        'video_tfrecord_dataset'), as in the original configs; `tables` maps a split to
        'name@N' (N shards 'name-0000i-of-0000N'), a file name or a list of files, relative to
        `base_dir`. The true example count is read from the records; `examples_per_subset`
        is only checked against it.
    Used by the trainer, not here: do_multicrop_test and log_test_epochs (the multi-view test on
      test_split every log_test_epochs epochs during training, as the original trainer does);
      prefetch_to_device is accepted for compatibility.
    """
    return ml_collections.ConfigDict(
        {
            "num_frames": 32,
            "stride": 2,
            "min_resize": 256,
            "crop_size": 224,
            "num_test_clips": 1,
            "do_three_spatial_crops": False,
            "zero_centering": True,
            "random_flip": None,
            "augmentation_params": default_augmentation_params(),
            "one_hot_labels": False,
            "multi_label": None,
            "label_offset": 0,
            "num_classes": None,
            "class_splits": None,
            "split_names": None,
            "train_split": "train",
            "eval_split": "validation",
            "test_split": "test",
            "test_batch_size": None,
            "num_parallel_calls": -1,
            "num_workers": 0,
            "prefetch": 2,
            "data_dir": None,
            "base_dir": None,
            "tables": None,
            "examples_per_subset": None,
            "do_multicrop_test": False,
            "log_test_epochs": 1,
            "prefetch_to_device": 2,
        }
    )


def merge(dataset_configs) -> ml_collections.ConfigDict:
    """The defaults overridden by `dataset_configs`, unvalidated; unknown keys raise."""
    return merge_locked(
        default_dataset_configs(),
        dataset_configs,
        "dataset_configs",
        free_form=("dataset_configs.tables", "dataset_configs.examples_per_subset"),
    )


def resolve(dataset_configs) -> ml_collections.ConfigDict:
    """Returns the defaults overridden by `dataset_configs`, validated; unknown keys raise,
    naming the key. `multi_label=None` (not derived from the model) means False here."""
    cfg = merge(dataset_configs)
    if cfg.multi_label is None:
        cfg.multi_label = False
    _validate(cfg)
    return cfg


def _check(cond: bool, key: str, value, why: str) -> None:
    if not cond:
        raise ValueError(f"dataset_configs.{key}={value!r}: {why}")


def _validate(cfg: ml_collections.ConfigDict) -> None:
    for key in ("num_frames", "stride", "min_resize", "crop_size", "num_test_clips"):
        value = cfg[key]
        _check(isinstance(value, int) and value >= 1, key, value, "must be a positive integer.")
    _check(
        cfg.min_resize >= cfg.crop_size,
        "min_resize",
        cfg.min_resize,
        f"must be >= dataset_configs.crop_size ({cfg.crop_size}).",
    )
    _validate_heads(cfg)
    _check(
        isinstance(cfg.log_test_epochs, (int, float)) and cfg.log_test_epochs > 0,
        "log_test_epochs",
        cfg.log_test_epochs,
        "must be a positive number of epochs (the multi-view test runs that often).",
    )
    if cfg.test_batch_size is not None:
        _check(cfg.test_batch_size >= 1, "test_batch_size", cfg.test_batch_size, "must be >= 1.")
    _validate_augmentation(cfg.augmentation_params)
    _check(
        cfg.num_parallel_calls == -1 or cfg.num_parallel_calls >= 1,
        "num_parallel_calls",
        cfg.num_parallel_calls,
        "must be -1 (one thread per core) or >= 1.",
    )
    _check(
        isinstance(cfg.num_workers, int) and cfg.num_workers >= 0,
        "num_workers",
        cfg.num_workers,
        "must be a number of worker processes >= 0.",
    )
    _check(
        isinstance(cfg.prefetch, int) and not isinstance(cfg.prefetch, bool) and cfg.prefetch >= 0,
        "prefetch",
        cfg.prefetch,
        "must be a number of batches >= 0.",
    )
    _check(
        isinstance(cfg.label_offset, int) and not isinstance(cfg.label_offset, bool),
        "label_offset",
        cfg.label_offset,
        "must be an integer (subtracted from the stored labels).",
    )


def _validate_heads(cfg: ml_collections.ConfigDict) -> None:
    """The multi-head keys: class_splits against num_classes and split_names."""
    if cfg.class_splits is None:
        return
    splits = list(cfg.class_splits)
    _check(
        len(splits) >= 2 and all(isinstance(n, int) and n >= 1 for n in splits),
        "class_splits",
        cfg.class_splits,
        "must list at least two positive head sizes, e.g. [300, 97].",
    )
    _check(
        cfg.num_classes is None or cfg.num_classes == sum(splits),
        "class_splits",
        cfg.class_splits,
        f"the heads sum to {sum(splits)} but dataset_configs.num_classes={cfg.num_classes}.",
    )
    _check(
        cfg.split_names is None or len(cfg.split_names) == len(splits),
        "split_names",
        cfg.split_names,
        f"needs one name per head in class_splits ({len(splits)}).",
    )


def _validate_augmentation(aug: ml_collections.ConfigDict) -> None:
    """dataset_configs.augmentation_params: probabilities, scale range, RandAugment."""
    _check(
        0 < aug.scale_min_factor <= aug.scale_max_factor,
        "augmentation_params.scale_min_factor",
        aug.scale_min_factor,
        "need 0 < scale_min_factor <= scale_max_factor.",
    )
    for key in ("prob_scale_jitter", "prob_color_augment", "prob_color_drop"):
        value = aug[key]
        _check(0.0 <= value <= 1.0, f"augmentation_params.{key}", value, "must be in [0, 1].")
    _check(
        aug.rand_augment_num_layers >= 0,
        "augmentation_params.rand_augment_num_layers",
        aug.rand_augment_num_layers,
        "must be >= 0.",
    )
    _check(
        aug.rand_augment_magnitude >= 0,
        "augmentation_params.rand_augment_magnitude",
        aug.rand_augment_magnitude,
        "must be >= 0.",
    )


# Bytes per value of the input batches on the host (uint8).
INPUT_BYTES = 1


def _available_memory() -> tuple[int, str] | None:
    """`(bytes, what limits them)` this process can still allocate, or None when unknown:
    the smaller of the memory the kernel reports available and the address-space limit."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        limits.append((int(info["MemAvailable"].split()[0]) * 1024, "available memory"))
    except (OSError, KeyError, ValueError):
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as f:
                used = int(f.read().split()[0]) * resource.getpagesize()
            limits.append((max(soft - used, 0), "the address-space limit (ulimit -v)"))
    except (OSError, ValueError, ImportError):
        pass
    return min(limits) if limits else None


def check_host_memory(config, process_count: int = 1) -> None:
    """Refuses batch and clip sizes whose input batches cannot fit in this host's memory.

    Runs before any data is read or model built, so an absurd `num_frames` or `batch_size` is
    an error naming the keys, not an out-of-memory failure deep in the pipeline.

    Raises:
      ValueError: naming the keys and both sizes.
    """
    cfg = config.dataset_configs
    available = _available_memory()
    if available is None:
        return
    free, what = available
    clip = cfg.num_frames * cfg.crop_size**2 * 3 * INPUT_BYTES
    views = cfg.num_test_clips * (3 if cfg.do_three_spatial_crops else 1)
    test_batch = cfg.test_batch_size or config.eval_batch_size or config.batch_size
    batches = [
        ("config.batch_size", config.batch_size, 1),
        ("config.eval_batch_size", config.eval_batch_size or config.batch_size, 1),
        ("dataset_configs.test_batch_size", test_batch, views),
    ]
    held = cfg.prefetch + 1  # The batches prepared ahead, and the one being handed over.
    for key, batch, per_video in batches:
        per_host = max(1, -(-int(batch) // max(process_count, 1)))
        need = per_host * per_video * clip * held
        if need <= free:
            continue
        views_text = f" × {per_video} views" if per_video > 1 else ""
        raise ValueError(
            f"The input batches of {key}={batch} ({per_host} per host){views_text} × "
            f"dataset_configs.num_frames={cfg.num_frames} frames × "
            f"{cfg.crop_size}×{cfg.crop_size} (dataset_configs.crop_size) × 3 channels, "
            f"{held} at a time (dataset_configs.prefetch={cfg.prefetch} + 1), take "
            f"{_gib(need)}: more than the {_gib(free)} this process can still allocate ({what})."
            f" Lower dataset_configs.num_frames, dataset_configs.crop_size or {key}."
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"
