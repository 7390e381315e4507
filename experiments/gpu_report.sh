#!/usr/bin/env bash
# The GPU figures of experiments/README.md (bf16, 32x224^2, ViViT-B) on one GPU, in stages:
#   cudnn-tests       the cuDNN flash-attention tests (fused == einsum, cuDNN really called, odd
#                     lengths, remat), each under its own time limit where pytest-timeout is
#                     installed (the GPU image has it),
#   first-step        a Model 1 training process's wall time, fresh and again with the
#                     persistent compilation cache the first one filled (first_step.py),
#   init-compile      the ~30 s compile of the state's initialisation, with JAX's threefry GPU
#                     kernel lowering off and on, and whether both give the same parameters,
#   m1-largest-batch  the largest Model 1 batch that fits (fused attention), its throughput / MFU,
#   fe-largest-batch  the same for the factorised encoder,
#   m1-frames-remat   how many frames Model 1 takes at batch 1 with fused attention + remat (up
#                     to 512), and one step at that length,
#   fe-fused          factorised-encoder throughput / MFU at batch 32 and where its kernel time
#                     goes (benchmark.py --profile: matmul, attention, other fusions),
#   m1-fused          the same for Model 1 at batch 8,
#   m1-fused-remat    the same with remat,
#   m1-einsum         einsum (XLA) attention for Model 1 at batch 8, the baseline of m1-fused,
#   real-data         Model 1 and the factorised encoder trained from DMVR records on local disk
#                     (written by the stage, TF-free) against synthetic batches: whether the step
#                     is input-bound, with 0, 4 and 8 host worker processes (real_data.py).
# Each stage runs under a time limit and the whole under BUDGET seconds (default 540), in this
# order; STAGES="name ..." runs only those (all of them need two or three calls of the default
# budget). What a stage prints goes to OUTDIR/log.txt, its figures to OUTDIR/*.json (at most 8
# files, so a short remote run can bring them all back).
# Costs measured on an H200 (2026-11-26): every ViViT-B process compiles the state's
# initialisation for ~30 s (threefry for 89 M parameters) before the ~18 s compile of its
# training step; each compile-only probe of memory_limits.py takes 18-35 s; a cuDNN test 10-20 s.
#
#   bash experiments/gpu_report.sh OUTDIR
#   STAGES="cudnn-tests m1-largest-batch fe-largest-batch" bash experiments/gpu_report.sh OUTDIR
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

all_stages="cudnn-tests first-step init-compile m1-largest-batch fe-largest-batch m1-frames-remat fe-fused m1-fused m1-fused-remat m1-einsum real-data"
stages=" ${STAGES:-$all_stages} "
for s in $stages; do
  [[ " $all_stages " == *" $s "* ]] || { echo "STAGES: no stage '$s'; the stages: $all_stages" >&2; exit 2; }
done

stage() { # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2 left=$((budget - SECONDS))
  shift 2
  [[ $stages == *" $name "* ]] || return 0
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
stage cudnn-tests 200 env JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}" VIVIT_JAX_REPORT_FAILURES_NOW=1 \
  $py -m pytest -v --tb=short "${per_test[@]}" -p no:cacheprovider tests/models/test_numerics.py \
  -k "cudnn_on_a_gpu or odd_lengths"
bench=(experiments/benchmark.py "${model[@]}" --frames="$frames" --train-only --repeats=3 --steps=2
  --warmup=1)
m1=("${bench[@]}" --variant=spacetime --batch=8)
stage first-step 150 $py experiments/first_step.py -- $py "${m1[@]}" --attention=fused \
  --repeats=1 --steps=1
stage init-compile 150 $py experiments/init_compile.py --variant=spacetime "${model[@]}" \
  --frames="$frames"
# From 96 clips: on an H200 Model 1's compiled peak was 34.6 / 68.0 / 122.6 / 125.6 GiB
# at batch 32 / 64 / 120 / 128 and the factorised encoder's 35.0 / 68.6 / 119.0 at 32 / 64 / 112.
stage m1-largest-batch 240 $py experiments/memory_limits.py --search=batch --variant=spacetime \
  "${model[@]}" --frames="$frames" --attention=fused --start=96 --granularity=8 "${limits[@]}" \
  --json="$out/m1_batch.json"
stage fe-largest-batch 240 $py experiments/memory_limits.py --search=batch \
  --variant=factorized_encoder "${model[@]}" --frames="$frames" --attention=fused --start=96 \
  --granularity=8 "${limits[@]}" --json="$out/fe_batch.json"
stage m1-frames-remat 180 $py experiments/memory_limits.py --search=frames --variant=spacetime \
  "${model[@]}" --batch=1 --attention=fused --remat --start=64 --granularity=64 --max=512 \
  "${limits[@]}" --run-steps=1 --json="$out/m1_frames.json"
stage fe-fused 100 $py "${bench[@]}" --variant=factorized_encoder --batch=32 --attention=fused \
  --profile=2 --json="$out/fe_batch32.json"
stage m1-fused 100 $py "${m1[@]}" --attention=fused --profile=2 --json="$out/m1_batch8.json"
stage m1-fused-remat 100 $py "${m1[@]}" --attention=fused --remat --profile=2 \
  --json="$out/m1_batch8_remat.json"
stage m1-einsum 100 $py "${m1[@]}" --attention=einsum --json="$out/m1_batch8_einsum.json"
stage real-data 240 $py experiments/real_data.py --size="${SIZE:-B}" --layers="${LAYERS:-0}" \
  --resolution="${RES:-224}" --frames="$frames" --batch="${REAL_BATCH:-32}" \
  --workers="${WORKERS:-0,4,8}" --data="${RECORDS:-/tmp/vivit_records}" --json="$out/real_data.json"
echo "== done at ${SECONDS} s" | tee -a "$out/log.txt"
