r"""The demo's figures, end to end: build `moving_shapes`, train `configs/demo.py` and its
single-frame control with the README's commands, evaluate both, print top-1 and wall times.

    python experiments/demo_accuracy.py [--data_dir=/tmp/demo_tfds] [--workdir=/tmp/demo_accuracy]

Each command runs as its own process, as a user would run it, so the wall times include
start-up, compilation and evaluation. The data directory is built from scratch unless
`--keep_data` is given. Nothing is asserted: the figures go in `configs/demo.py`'s docstring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd: list[str]) -> tuple[float, str]:
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    elapsed = time.time() - start
    if proc.returncode:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"Failed ({proc.returncode}): {' '.join(cmd)}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default="/tmp/demo_accuracy_tfds")
    parser.add_argument("--workdir", default="/tmp/demo_accuracy")
    parser.add_argument("--keep_data", action="store_true")
    args = parser.parse_args()
    if not args.keep_data:
        shutil.rmtree(args.data_dir, ignore_errors=True)
    shutil.rmtree(args.workdir, ignore_errors=True)
    py = sys.executable

    build_s, _ = _run(
        [py, "-m", "vivit_jax.data.build", "--dataset=moving_shapes", f"--data_dir={args.data_dir}"]
    )
    print(f"build moving_shapes: {build_s:.0f} s", flush=True)
    rows = []
    for name, arg in (("demo", ""), ("single_frame control", ":single_frame")):
        workdir = os.path.join(args.workdir, name.split()[0])
        config = [
            f"--config=configs/demo.py{arg}",
            f"--workdir={workdir}",
            f"--config.dataset_configs.data_dir={args.data_dir}",
        ]
        train_s, _ = _run([py, "-m", "vivit_jax.main", *config])
        _, out = _run([py, "-m", "vivit_jax.main", "--mode=evaluate", *config])
        summary = json.loads(out[out.index("{") :])
        rows.append((name, summary["valid/top1"], summary["valid/top5"], train_s))
        print(
            f"{name}: top-1 {summary['valid/top1']:.4f}, top-5 {summary['valid/top5']:.4f}, "
            f"train command {train_s:.0f} s",
            flush=True,
        )
    demo = rows[0]
    print(
        f"\ndemo end to end (build + train): {build_s + demo[3]:.0f} s, "
        f"validation top-1 {demo[1]:.1%}; single-frame control top-1 {rows[1][1]:.1%} "
        "(chance 12.5%)."
    )


if __name__ == "__main__":
    main()
