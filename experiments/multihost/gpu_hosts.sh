#!/usr/bin/env bash
# Several GPU hosts without a scheduler: run this on every host with its own index.
#   host0$ experiments/multihost/gpu_hosts.sh 0 2 host0:12345 CONFIG WORKDIR
#   host1$ experiments/multihost/gpu_hosts.sh 1 2 host0:12345 CONFIG WORKDIR
# WORKDIR must be shared (NFS, or gs:// with the gcsfs/tensorstore credentials set up).
set -euo pipefail
ID=${1:?process id}; N=${2:?number of hosts}; COORD=${3:?host0:port}
CONFIG=${4:?config}; WORKDIR=${5:?workdir}; shift 5
exec python -m vivit_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --coordinator_address="$COORD" --num_processes="$N" --process_id="$ID" "$@"
