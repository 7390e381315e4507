#!/usr/bin/env bash
# N processes on this machine, each with D simulated CPU devices (what the tests do):
#   experiments/multihost/local.sh 2 4 /tmp/vivit_2proc [--config.key=value ...]
# Build the data once first: python -m vivit_jax.data.build --dataset=moving_shapes/tiny
set -euo pipefail
N=${1:-2}; D=${2:-4}; WORKDIR=${3:-/tmp/vivit_multihost}; shift $(( $# < 3 ? $# : 3 ))
PORT=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for ((i = 0; i < N; i++)); do
  XLA_FLAGS=--xla_force_host_platform_device_count=$D JAX_PLATFORMS=cpu \
    python -m vivit_jax.main --config=configs/demo.py:tiny --workdir="$WORKDIR" \
      --coordinator_address=127.0.0.1:$PORT --num_processes=$N --process_id=$i "$@" \
      > "$WORKDIR.process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' INT TERM   # Ctrl-C: all save and stop together.
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "logs: $WORKDIR.process_*.log, exit status $status"
exit $status
