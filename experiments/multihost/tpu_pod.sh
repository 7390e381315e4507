#!/usr/bin/env bash
# Cloud TPU pod slice (e.g. v4-64): the same command on every worker; --jax_distributed reads the
# TPU metadata. The workdir must be a bucket every worker can write.
#   experiments/multihost/tpu_pod.sh my-tpu us-central2-b CONFIG gs://bucket/run [--config.k=v]
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?gs:// workdir}; shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd ~/vivit_jax && python -m vivit_jax.main --jax_distributed \
    --config=$CONFIG --workdir=$WORKDIR $*"
# For FSDP of ViViT-L/H across chips add e.g. --config.sharding.model_axis_size=8.
