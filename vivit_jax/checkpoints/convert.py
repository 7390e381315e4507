r"""Inspect and convert checkpoints from the command line.

  # What is in a checkpoint: format, variant, the `config.model` its shapes imply, and sizes.
  python -m vivit_jax.checkpoints.convert --input=/ckpt/vivit_base_16x2_k400/checkpoint

  # Convert (to this project's orbax layout, an .npz, a Flax msgpack, or HuggingFace):
  python -m vivit_jax.checkpoints.convert --input=checkpoint --to=orbax --output=/tmp/ckpts
  python -m vivit_jax.checkpoints.convert --input=checkpoint --to=huggingface \
      --output=/tmp/vivit-hf --num_frames=32 --image_size=224

Conversion rewrites parameters only (no optimizer state); it never inflates or resizes.
"""

from __future__ import annotations

import argparse
import os
import sys

import ml_collections
import numpy as np

from vivit_jax.checkpoints import formats, huggingface, trees
from vivit_jax.checkpoints.describe import infer_model_config, summary
from vivit_jax.checkpoints.trees import CheckpointError

TARGETS = ("orbax", "npz", "msgpack", "huggingface")


def convert(
    src: str,
    to: str,
    output: str,
    *,
    src_format: str | None = None,
    num_frames: int | None = None,
    image_size: int | None = None,
    step: int = 0,
) -> str:
    """Reads `src` and writes its parameters as `to` at `output`; returns `output`."""
    if to not in TARGETS:
        raise CheckpointError(f"--to={to!r}; expected one of {TARGETS}.")
    params = formats.load_params(src, src_format)
    if to == "orbax":
        formats.save_params_orbax(output, params, step=step)
    elif to == "npz":
        flat = {trees.path_str(p): np.asarray(v) for p, v in trees.flatten(params).items()}
        np.savez(output, **flat)
    elif to == "msgpack":
        from flax import serialization

        with open(output, "wb") as f:
            f.write(serialization.msgpack_serialize({"params": params}))
    else:
        if not (num_frames and image_size):
            raise CheckpointError("--to=huggingface needs --num_frames and --image_size.")
        huggingface.export_huggingface_vivit(
            params,
            _complete(infer_model_config(params)),
            output,
            num_frames=num_frames,
            image_size=image_size,
        )
    return output


def _complete(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    from vivit_jax.models import complete_model_config

    cfg = complete_model_config(cfg)
    cfg.dropout_rate = cfg.attention_dropout_rate = 0.0  # Not stored in parameters.
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vivit_jax.checkpoints.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="checkpoint file or directory")
    parser.add_argument("--input_format", default="auto", help=f"auto or one of {formats.FORMATS}")
    parser.add_argument("--to", choices=TARGETS, help="output format; omit to only inspect")
    parser.add_argument("--output", help="output file or directory")
    parser.add_argument("--num_frames", type=int, help="input frames (HuggingFace export)")
    parser.add_argument("--image_size", type=int, help="input height = width (HuggingFace export)")
    parser.add_argument("--step", type=int, default=0, help="step number (orbax output)")
    args = parser.parse_args(argv)
    try:
        fmt, resolved = (
            formats.detect_format(args.input)
            if args.input_format == "auto"
            else (args.input_format, args.input)
        )
        if not args.to:
            print(summary(resolved, formats.load_params(args.input, args.input_format), fmt))
            return 0
        if not args.output:
            parser.error("--to needs --output")
        convert(
            args.input,
            args.to,
            args.output,
            src_format=args.input_format,
            num_frames=args.num_frames,
            image_size=args.image_size,
            step=args.step,
        )
        print(f"Wrote {args.to} checkpoint to {os.path.abspath(args.output)}")
        return 0
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
