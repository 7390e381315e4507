r"""Inspect and convert checkpoints from the command line.

  # What is in a checkpoint: format, variant, the `config.model` its shapes imply, and sizes.
  python -m vivit_jax.checkpoints.convert --input=/ckpt/vivit_base_16x2_k400/checkpoint
  # One model of a file that holds several (big_vision's sub-tree syntax), e.g. SigLIP's image
  # tower (found without it too):
  python -m vivit_jax.checkpoints.convert --input=/ckpt/siglip_b16.npz:img

  # Convert (to this project's orbax layout, an .npz, a Flax msgpack, or HuggingFace):
  python -m vivit_jax.checkpoints.convert --input=checkpoint --to=orbax --output=/tmp/ckpts
  python -m vivit_jax.checkpoints.convert --input=checkpoint --to=huggingface \
      --output=/tmp/vivit-hf --num_frames=32 --image_size=224

Conversion rewrites parameters only (no optimizer state); it never inflates or resizes. An
existing output (for orbax: the step `<output>/<step>`) is replaced only with --overwrite. What
was written is read back and compared with the input before the path actually written (numpy
adds `.npz` to an --output without it) is printed.
"""

from __future__ import annotations

import argparse
import os
import sys

import ml_collections
import numpy as np

from vivit_jax.checkpoints import formats, huggingface, trees
from vivit_jax.checkpoints.describe import infer_model_config, summary
from vivit_jax.checkpoints.orbax_io import orbax_steps
from vivit_jax.checkpoints.trees import CheckpointError

TARGETS = ("orbax", "npz", "msgpack", "huggingface")
_HF_FILES = ("config.json", *formats.HF_WEIGHTS)


def convert(
    src: str,
    to: str,
    output: str,
    *,
    src_format: str | None = None,
    num_frames: int | None = None,
    image_size: int | None = None,
    step: int = 0,
    overwrite: bool = False,
) -> str:
    """Reads `src` and writes its parameters as `to` at `output`.

    Returns:
      The absolute path written: `<output>/<step>` for orbax, `output` with numpy's `.npz`
      ending for npz, else `output`.

    Raises:
      FileExistsError: the output (orbax: its step) exists and `overwrite` is False.
      CheckpointError: an unreadable input, or an output that does not read back as the input.
    """
    if to not in TARGETS:
        raise CheckpointError(f"--to={to!r}; expected one of {TARGETS}.")
    if to == "huggingface" and not (num_frames and image_size):
        raise CheckpointError("--to=huggingface needs --num_frames and --image_size.")
    params = formats.load_params(src, src_format)
    written = _destination(to, output, step)
    _check_output(to, output, written, step, overwrite)
    if to == "orbax":
        written = formats.save_params_orbax(output, params, step=step, overwrite=overwrite)
    elif to == "npz":
        flat = {trees.path_str(p): np.asarray(v) for p, v in trees.flatten(params).items()}
        np.savez(written, **flat)
    elif to == "msgpack":
        from flax import serialization

        with open(written, "wb") as f:
            f.write(serialization.msgpack_serialize({"params": params}))
    else:
        for name in _HF_FILES if overwrite else ():  # A stale weights file must not remain.
            if os.path.isfile(os.path.join(output, name)):
                os.remove(os.path.join(output, name))
        huggingface.export_huggingface_vivit(
            params,
            _complete(infer_model_config(params)),
            output,
            num_frames=num_frames,
            image_size=image_size,
        )
    _verify(written, params)
    return os.path.abspath(written)


def _destination(to: str, output: str, step: int) -> str:
    if to == "orbax":
        return os.path.join(output, str(step))
    if to == "npz" and not output.endswith(".npz"):
        return output + ".npz"  # What numpy.savez writes.
    return output


def _check_output(to: str, output: str, written: str, step: int, overwrite: bool):
    """Refuses to replace anything without `overwrite`, naming what is there."""
    again = "pass --overwrite (overwrite=True) to replace it"
    if to == "orbax":
        if os.path.isdir(output) and (step in orbax_steps(output) or os.path.exists(written)):
            if not overwrite:
                raise FileExistsError(
                    f"{output!r} already holds step {step} ({written}); {again}, or choose "
                    "another --step or --output."
                )
        return
    if to == "huggingface":
        if os.path.isfile(output):
            raise FileExistsError(f"{output!r} is a file; --to=huggingface writes a directory.")
        there = [n for n in _HF_FILES if os.path.exists(os.path.join(output, n))]
        if there and not overwrite:
            raise FileExistsError(
                f"{output!r} already holds a HuggingFace model ({', '.join(there)}); {again}."
            )
        return
    if os.path.isdir(written):
        raise FileExistsError(f"{written!r} is a directory; --to={to} writes a file.")
    if os.path.exists(written) and not overwrite:
        raise FileExistsError(f"{written!r} already exists; {again}.")


def _verify(written: str, params):
    """What was written reads back as `params`, else a CheckpointError: never a false success."""
    if not os.path.exists(written):
        raise CheckpointError(f"Nothing was written at {written!r}.")
    want, got = trees.flatten(params), trees.flatten(formats.load_params(written))
    bad = sorted(set(want) ^ set(got)) or [
        p
        for p in want
        if np.shape(want[p]) != np.shape(got[p]) or not np.array_equal(want[p], got[p])
    ]
    if bad:
        raise CheckpointError(
            f"{written!r} does not read back as the input: {len(bad)} parameter(s) differ or are "
            f"missing, e.g. {trees.path_str(bad[0])}."
        )


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
    parser.add_argument(
        "--input",
        required=True,
        help="checkpoint file or directory; `file.npz:key` reads one model of several",
    )
    parser.add_argument("--input_format", default="auto", help=f"auto or one of {formats.FORMATS}")
    parser.add_argument("--to", choices=TARGETS, help="output format; omit to only inspect")
    parser.add_argument(
        "--output", help="output file or directory (orbax: written to <output>/<step>)"
    )
    parser.add_argument("--num_frames", type=int, help="input frames (HuggingFace export)")
    parser.add_argument("--image_size", type=int, help="input height = width (HuggingFace export)")
    parser.add_argument("--step", type=int, default=0, help="step number (orbax output)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (orbax: the step <output>/<step>); else it is an error",
    )
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
        written = convert(
            args.input,
            args.to,
            args.output,
            src_format=args.input_format,
            num_frames=args.num_frames,
            image_size=args.image_size,
            step=args.step,
            overwrite=args.overwrite,
        )
        print(f"Wrote {args.to} checkpoint to {written}")
        return 0
    except (CheckpointError, OSError) as e:  # OSError: missing input, existing output.
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
