r"""ViViT-L/16x2 Model 2 (factorised encoder, L_t = 4) on EPIC-Kitchens-100: noun and verb heads.

    python -m vivit_jax.data.build --dataset=epic_kitchens_100 --manual_dir=/data/EPIC-KITCHENS \
        --data_dir=/data/tfds                                    # once: the TFDS build
    python -m vivit_jax.main --config=configs/epic_kitchens/vivit_large_factorised_encoder.py \
        --config.dataset_configs.data_dir=/data/tfds --workdir=/tmp/vivit_l_fe_ek
    python -m vivit_jax.main --mode=evaluate --workdir=/tmp/vivit_l_fe_ek \
        --config=configs/epic_kitchens/vivit_large_factorised_encoder.py \
        --config.dataset_configs.data_dir=/data/tfds [--checkpoint=<Scenic EK file>]
    # Scenic's DMVR records instead: --config=...:dmvr --config.dataset_configs.base_dir=...

Model (`model_name='vivit_multihead_classification'`, Scenic's): one output layer of 300 + 97
logits, read as a noun head (the first 300) and a verb head (the last 97), so Scenic's EK
checkpoint loads unchanged. Loss: the mean of the two heads' softmax cross-entropies (label
smoothing within each head). Reported: noun, verb and action accuracy (action correct iff both
argmaxes are; action top-5 ranks noun-verb pairs by the product of the heads' probabilities,
as Scenic's `joint_top_k`).

Data: the `epic_kitchens_100` TFDS build (one example per action segment, cut by its
timestamps; `noun_label` and `verb_label` from EPIC_100_train/validation.csv), read as the
indices `[noun, 300 + verb]` over the concatenated heads; `multi_label` (True for the multi-head
model) turns them into the 397-wide multi-hot target the multi-head loss splits. With `:dmvr`:
DMVR records as Scenic reads them (`tf.train.SequenceExample`, one JPEG per frame) with BOTH
labels in `context['clip/label/index']` as `[noun, 300 + verb]`
(`vivit_jax.data.dmvr.write_records(label=[noun, 300 + verb])` writes such records). EK-100's
test labels are not public, so the multi-view test runs on the validation split (9,668
segments, as Scenic's `test` table).

Recipe (the paper's appendix): 32 frames at stride 1, 224² crops from 256 px short sides, scale
jitter, RandAugment 2 layers magnitude 15, mixup α 0.1, label smoothing 0.2, stochastic depth
0.2, SGD momentum, base learning rate 0.5, 50 epochs; test 4 clips × 3 crops. Initialised from
the ImageNet-21k ViT-L/16 (`--config.init_from.checkpoint_path=...`); Scenic's comment suggests
a Kinetics checkpoint as the alternative (e.g. its K400 ViViT-L FE file).

Should reach (paper Table 8 / Scenic's released EK checkpoint): action top-1 44.0 / 43.6%;
not measured with this code. Cost: about 1 TFLOP per 32×224² view (ViViT-L FE, a multiply-add
counted as one FLOP).

Differs from Scenic's `epic_kitchens/vivit_large_factorised_encoder.py`, which does not parse (a
comment line without `#` in `init_from`) and would not run (no `num_classes` for its DMVR
reader; `test_batch_size` must equal the device count): here `num_classes=397`, labels as above,
any test batch.

Arguments (comma-separated): `dmvr` — DMVR records in `dataset_configs.base_dir` instead of
the TFDS build; `tiny` — a seconds-long CPU run (a small factorised encoder, 8 frames of 16²,
2 clips × 3 crops) for tests.
"""

from __future__ import annotations

import os
import sys

try:
    from configs import common
except ImportError:  # Loaded by path from another directory: make the repo root importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from configs import common

EK_SIZES = {"train": 67_217, "validation": 9_668}
NOUNS, VERBS = 300, 97


def get_config(arg: str | None = None):
    """Returns the config; `arg`: comma-separated words of 'dmvr', 'tiny'."""
    args = common.parse_args(
        arg, ("dmvr", "tiny"), "configs/epic_kitchens/vivit_large_factorised_encoder.py"
    )
    config = common.base_config()
    config.experiment_name = "vivit_large_factorised_encoder_ek"
    config.model_name = "vivit_multihead_classification"
    common.video_data(config, stride=1, color_augment=False)
    if "dmvr" in args:
        common.dmvr_records(
            config,
            num_classes=NOUNS + VERBS,
            tables={s: f"{s}.tfrecord@1024" for s in EK_SIZES},
            examples_per_subset=EK_SIZES,
        )
    else:
        config.dataset_name = "epic_kitchens_100"
    ds = config.dataset_configs
    ds.class_splits = [NOUNS, VERBS]
    ds.split_names = ["noun", "verb"]
    ds.test_split = "validation"
    aug = ds.augmentation_params
    aug.do_rand_augment = True
    aug.rand_augment_num_layers = 2
    aug.rand_augment_magnitude = 15

    common.factorised_encoder(config, "L", temporal_layers=4)
    config.model.stochastic_droplayer_rate = 0.2
    common.paper_training(
        config, base_learning_rate=0.5, epochs=50, train_examples=EK_SIZES["train"]
    )
    config.label_smoothing = 0.2
    config.mixup.alpha = 0.1
    config.checkpoint_steps = 500
    config.log_summary_steps = 100
    common.init_from_vit(config, "L")

    if "tiny" in args:
        _tiny(config, dmvr="dmvr" in args)
    return config


def _tiny(config, dmvr: bool) -> None:
    common.tiny_factorised_encoder(config)
    if dmvr:
        ds = config.dataset_configs
        ds.examples_per_subset = None
        ds.tables = {"train": "train.tfrecord", "validation": "validation.tfrecord"}
