"""Where a device's time goes: the kernels of a JAX profiler trace, summed by kind.

    python experiments/profile_summary.py TRACE_DIR_OR_XPLANE_PB [--top=15]

`benchmark.py --profile` traces a few training steps of each runner and prints this summary
(and keeps it in its JSON), so that one short GPU run says what share of a step goes to
matrix multiplies, to attention kernels and to everything else (XLA's element-wise and
reduction fusions: layer norms, GELU, softmax, casts, the optimiser update). Reads the trace with
`jax.profiler.ProfileData` (no TensorFlow, no TensorBoard: the GPU image has neither plugin).

Written by hand: no installed library summarises an XSpace by kernel without TensorBoard's
profile plugin.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re

# Substrings of a kernel's name (or of the HLO instruction it runs) that say its kind; the first
# kind that matches wins, so attention is tested before the matmul words that its kernels and
# fusions also contain.
CATEGORIES = (
    ("attention", ("fmha", "sdpa", "flash", "attention")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "wgmma", "matmul", "dot")),
    ("copy", ("memcpy", "memset", "copy", "transpose")),
)

# HLO instructions whose CPU events contain other instructions' events (not counted).
CONTAINERS = re.compile(r"(while|conditional|call)(\.\d+)*$")


def kernel_category(*names: str) -> str:
    """`attention`, `matmul`, `copy`, or `other` (fusions, reductions, ...) for a kernel.

    By names alone: a kernel that fuses a matmul under another name counts as `other` (XLA:CPU's
    `ynn_fusion`, jaxlib's default YNNPACK dots with their neighbours; vivit_jax compiles its
    steps with Eigen dots, named `dot`, instead).
    """
    text = " ".join(names).lower()
    for category, words in CATEGORIES:
        if any(w in text for w in words):
            return category
    return "other"


def kernel_family(name: str) -> str:
    """`name` less its trailing instance numbers (`loop_add_fusion_12`, `dot.54`), for grouping."""
    return re.sub(r"([._]\d+)+$", "", name) or name


def find_xplane(path: str) -> str:
    """The newest `*.xplane.pb` under `path` (a trace directory), or `path` itself."""
    if os.path.isfile(path):
        return path
    found = glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True)
    if not found:
        raise FileNotFoundError(
            f"no *.xplane.pb under {path!r}: pass the directory given to jax.profiler.trace "
            "(or the .xplane.pb file) after the trace has stopped"
        )
    return max(found, key=os.path.getmtime)


def _device_events(data):
    """(name, hlo_op, seconds) of every kernel run on a device, from a `ProfileData`.

    On an accelerator: the events of each device plane's stream lines (the other lines of such a
    plane, "XLA Ops" and "XLA Modules", cover the same time again). On a CPU, which has no device
    plane: the host threads' events that name the HLO instruction they ran, less loops and calls
    (their bodies' instructions are counted). There the sum is a lower bound, not a breakdown
    of the step: a 2-core ViViT step's kernel events cover 65-86% of its wall time, and the
    matmuls' share of that is low (their FLOPs over their events' time exceeded the measured
    matmul peak), as if an Eigen dot's event ended before the work it handed to the thread pool.
    """
    planes = list(data.planes)
    devices = [p for p in planes if p.name.startswith("/device:") and "CUSTOM" not in p.name]
    for plane in devices:
        for line in plane.lines:
            if not line.name.startswith("Stream"):
                continue
            for e in line.events:
                stats = dict(e.stats)
                yield e.name, str(stats.get("hlo_op", "")), e.duration_ns * 1e-9
    if devices:
        return
    for plane in planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for e in line.events:
                hlo_op = str(dict(e.stats).get("hlo_op", ""))
                # A loop's or call's event spans its body, whose kernels have events of their own.
                if hlo_op and not CONTAINERS.match(hlo_op):
                    yield e.name, hlo_op, e.duration_ns * 1e-9


def summarize(path: str, top: int = 15) -> dict:
    """Kernel time of the trace at `path` by category, and its `top` kernel families by time.

    Times are summed kernel durations (on a GPU: busy time of the streams, not wall time).
    """
    from jax.profiler import ProfileData  # late: importing this module needs no JAX

    data = ProfileData.from_file(find_xplane(path))
    by_category = collections.Counter()
    kernels = collections.defaultdict(lambda: [0, 0.0, ""])  # family -> count, seconds, category
    for name, hlo_op, seconds in _device_events(data):
        category = kernel_category(name, hlo_op)
        by_category[category] += seconds
        k = kernels[kernel_family(name)]
        k[0] += 1
        k[1] += seconds
        k[2] = category
    total = sum(by_category.values())
    if not total:
        raise ValueError(f"{path!r} holds no device kernels: was anything run while tracing?")
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    return dict(
        kernel_s=total,
        by_category={c: dict(s=s, fraction=s / total) for c, s in by_category.most_common()},
        top=[dict(name=n, count=c, s=s, category=cat) for n, (c, s, cat) in ranked],
    )


def format_summary(summary: dict, steps: int = 1) -> str:
    """A few lines: time per step by category, then the top kernels."""
    per = 1e3 / steps
    lines = [
        f"  kernel time {summary['kernel_s'] * per:.1f} ms per step: "
        + ", ".join(
            f"{c} {v['s'] * per:.1f} ms ({100 * v['fraction']:.0f}%)"
            for c, v in summary["by_category"].items()
        )
    ]
    for k in summary["top"]:
        lines.append(
            f"  {k['s'] * per:8.2f} ms {k['count'] // steps:>5}x  {k['category']:<9} {k['name'][:90]}"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a jax.profiler trace directory or .xplane.pb file")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--steps", type=int, default=1, help="steps the trace holds (per-step times)")
    args = ap.parse_args()
    print(format_summary(summarize(args.path, args.top), args.steps))


if __name__ == "__main__":
    main()
