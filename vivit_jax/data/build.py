r"""Builds a dataset in one command.

  python -m vivit_jax.data.build --dataset=moving_shapes --data_dir=~/tensorflow_datasets
  python -m vivit_jax.data.build --dataset=kinetics400 --manual_dir=/data/k400 \
      --data_dir=/data/tfds [--config=short256] [--num_workers=16]
  python -m vivit_jax.data.build --dataset=something_something_v2 --manual_dir=/data/ssv2 \
      --data_dir=/data/tfds
  python -m vivit_jax.data.build --dataset=video_folder --manual_dir=/data/my_videos \
      --data_dir=/data/tfds            (class folders; video_folder/multilabel_short256: CSVs)
  python -m vivit_jax.data.build --dataset=epic_kitchens_100 --manual_dir=/data/epic \
      --data_dir=/data/tfds
  python -m vivit_jax.data.build --dataset=moments_in_time --manual_dir=/data/mit \
      --data_dir=/data/tfds

`--dataset` may name a config ('kinetics400/short320', 'moving_shapes/tiny',
'video_folder/multilabel_short256'). A dataset that
is already built is left as it is (use --overwrite to rebuild). For the video datasets, the
rows that were skipped (missing or undecodable files, bad annotation rows, each with its reason)
are printed and written to `<data_dir>/<name>/<config>/<version>/build_report.json`. The partial
folder of an interrupted build is removed by the next build (`builders/build_dir.py`); two
builds of the same dataset do not run at once (the second waits). An unknown name or config
prints the datasets and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _parse(argv):
    from vivit_jax.data.builders.names import DATASETS

    parser = argparse.ArgumentParser(
        prog="python -m vivit_jax.data.build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"{', '.join(DATASETS)}, optionally with /<config>.",
    )
    parser.add_argument(
        "--data_dir", default=None, help="TFDS data dir (default ~/tensorflow_datasets)."
    )
    parser.add_argument(
        "--manual_dir",
        default=None,
        help="Folder with the downloaded videos and annotations (default <data_dir>/downloads/manual).",
    )
    parser.add_argument(
        "--config", default=None, help="Builder config, e.g. short256, multilabel_short256 or tiny."
    )
    parser.add_argument("--num_workers", type=int, default=None, help="Decoding threads.")
    parser.add_argument("--overwrite", action="store_true", help="Rebuild if already built.")
    return parser.parse_args(argv)


def build(
    dataset: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    config: str | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
):
    """Builds `dataset`; returns the builder (with `build_reports` for the video datasets)."""
    import tensorflow_datasets as tfds

    from vivit_jax.data import builders
    from vivit_jax.data.builders import build_dir, names

    builders.register()

    name = dataset if config is None else f"{dataset.split('/')[0]}/{config}"
    names.check_buildable(name)
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    kwargs = {}
    if num_workers and not name.startswith("moving_shapes"):
        kwargs["num_workers"] = num_workers
    builder = tfds.builder(name, data_dir=data_dir, **kwargs)
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual_dir) if manual_dir else None,
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
    )
    if builder.is_prepared() and not overwrite:
        build_dir.remove_leftovers(builder)
        print(f"{builder.info.full_name} is already built in {builder.data_dir}.")
        return builder
    start = time.time()
    builder.download_and_prepare(download_config=download_config)
    reports = getattr(builder, "build_reports", {})
    if reports:
        path = os.path.join(builder.data_dir, "build_report.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({s: r.to_json() for s, r in reports.items()}, f, indent=1)
        print("\n".join(r.summary() for r in reports.values()))
        print(f"Skipped-file report: {path}")
    splits = {s: v.num_examples for s, v in builder.info.splits.items()}
    print(
        f"Built {builder.info.full_name} in {time.time() - start:.0f} s: {splits} -> {builder.data_dir}"
    )
    return builder


def main(argv=None):
    from vivit_jax.data.builders.names import UnknownDatasetError

    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        build(
            args.dataset,
            args.data_dir,
            args.manual_dir,
            args.config,
            args.num_workers,
            args.overwrite,
        )
    except UnknownDatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("Interrupted before the build finished; no partial folder is left.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
