#!/usr/bin/env bash
# TPU VM pod slice: the same command on every worker; jax.distributed detects the pod itself.
# The repo and the data must be on every worker (e.g. a shared bucket mounted at the same path).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu.sh experiments/configs/imagenet_resnet50.py gs-mounted/runs/r50
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
config=${1:?config file}
workdir=${2:?workdir on storage every worker can write}
shift 2
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd ~/cnn && python -m experiments.train --config $config --workdir $workdir --config.parallel=sharded --config.distributed=True $*"
