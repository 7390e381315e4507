#!/usr/bin/env bash
# Issue #8's GPU figures in one run, for a short lease of one GPU (bf16, 32x224^2, ViViT-B):
#   1. the cuDNN flash-attention tests (fused == einsum, cuDNN really called, odd lengths, remat),
#      each under its own time limit where pytest-timeout is installed (the GPU image has it),
#   2. Model 1 training throughput / MFU with fused (cuDNN) attention, batch 8, with the
#      class-token-only last block (the default) and without, and where each one's kernel time
#      goes (benchmark.py --profile: matmul, attention, other fusions),
#   3. the same with remat (on an H100, 2026-11-26, ViViT-B runs with remat did not finish),
#   4. the largest Model 1 batch that fits (fused attention), its throughput / MFU,
#   5. the largest factorised-encoder batch that fits (fused attention), its throughput / MFU,
#   6. factorised-encoder throughput / MFU at batch 32,
#   7. how many frames Model 1 takes at batch 1 with fused attention + remat (up to 512),
#   8. einsum (XLA) attention for Model 1 at batch 8, the baseline of stage 2.
# Each stage runs under a time limit and the whole under BUDGET seconds (default 540), most
# wanted first; what a stage prints goes to OUTDIR/log.txt, its figures to OUTDIR/*.json (at
# most 8 files: what a device lease brings back). On an H200 (2026-11-26) Model 1 at batch 8
# with einsum and fused took 66 s and each compile-only probe of memory_limits.py 11-28 s;
# budget about 10 minutes for all of it.
#
#   bash experiments/gpu_report.sh OUTDIR
#
# SIZE, LAYERS, FRAMES, RES, LIMIT_GIB shrink the models for a dry run on a CPU (LIMIT_GIB is
# needed there: a CPU reports no memory limit).
set -u
out=${1:?usage: bash experiments/gpu_report.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
budget=${BUDGET:-540}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
model=(--size="${SIZE:-B}" --layers="${LAYERS:-0}" --resolution="${RES:-224}" --dtype=bfloat16)
frames=${FRAMES:-32}
limits=(--run-steps=3 --max-probes=5)
[[ -n "${LIMIT_GIB:-}" ]] && limits+=(--limit-gib="$LIMIT_GIB")

stage() { # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2 left=$((budget - SECONDS))
  shift 2
  if ((left < 20)); then
    echo "== $name: skipped, ${left} s of the budget left" | tee -a "$out/log.txt"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit} s, at ${SECONDS} s)" | tee -a "$out/log.txt"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$out/log.txt"
  echo "== $name: exit ${PIPESTATUS[0]} at ${SECONDS} s" | tee -a "$out/log.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  $py -c 'import jax, jaxlib, flax, optax; print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'
  $py -c 'from jax._src.lib import cuda_versions as c; print("cudnn", c and c.cudnn_get_version())' 2>&1
} | tee -a "$out/log.txt"

# Failures are printed as they happen (tests/conftest.py), a test still running after 40 s dumps
# its stack (pytest's faulthandler_timeout), and with pytest-timeout one running 45 s fails.
per_test=(-o faulthandler_timeout=40)
$py -c "import pytest_timeout" 2>/dev/null && per_test+=(--timeout=45)
stage cudnn-tests 120 env JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}" VIVIT_JAX_REPORT_FAILURES_NOW=1 \
  $py -m pytest -v --tb=short "${per_test[@]}" -p no:cacheprovider tests/models/test_numerics.py \
  -k "cudnn_on_a_gpu or odd_lengths"
m1=(experiments/benchmark.py --variant=spacetime "${model[@]}" --frames="$frames" --batch=8
  --train-only --repeats=3 --steps=2 --warmup=1)
stage m1-fused 100 $py "${m1[@]}" --attention=fused --last-block=cls,all --profile=2 \
  --json="$out/m1_batch8.json"
stage m1-fused-remat 60 $py "${m1[@]}" --attention=fused --remat --json="$out/m1_batch8_remat.json"
stage m1-largest-batch 130 $py experiments/memory_limits.py --search=batch --variant=spacetime \
  "${model[@]}" --frames="$frames" --attention=fused --start=32 --granularity=8 "${limits[@]}" \
  --json="$out/m1_batch.json"
stage fe-largest-batch 120 $py experiments/memory_limits.py --search=batch \
  --variant=factorized_encoder "${model[@]}" --frames="$frames" --attention=fused --start=32 \
  --granularity=16 "${limits[@]}" --json="$out/fe_batch.json"
stage fe-fused 60 $py experiments/benchmark.py --variant=factorized_encoder "${model[@]}" \
  --frames="$frames" --batch=32 --attention=fused --train-only --repeats=3 --steps=2 --warmup=1 \
  --profile=2 --json="$out/fe_batch32.json"
stage m1-frames-remat 120 $py experiments/memory_limits.py --search=frames --variant=spacetime \
  "${model[@]}" --batch=1 --attention=fused --remat --start=64 --granularity=64 --max=512 \
  "${limits[@]}" --run-steps=1 --json="$out/m1_frames.json"
stage m1-einsum 60 $py "${m1[@]}" --attention=einsum --json="$out/m1_batch8_einsum.json"
echo "== done at ${SECONDS} s" | tee -a "$out/log.txt"
