#!/usr/bin/env bash
# One host, all its devices: jit over a mesh of every local device (or --config.parallel=pmap).
# Usage: launch/local.sh CONFIG WORKDIR [--config.field=value ...]
set -euo pipefail
config=${1:?config file, e.g. experiments/configs/cifar10_resnet18.py}
workdir=${2:?workdir, e.g. runs/cifar10_resnet18}
shift 2
exec python -m experiments.train --config "$config" --workdir "$workdir" --config.parallel=sharded "$@"
