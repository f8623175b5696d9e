#!/usr/bin/env bash
# One machine, several GPUs: the trainer is data-parallel over every device it sees.
#   bash launch/multi_gpu.sh configs/cifar100_res122i.py runs/cifar100_res122i [--config.field=value ...]
# Pick the GPUs with CUDA_VISIBLE_DEVICES; config.batch_size is the global batch and must divide
# by their number (the paper's 100 suits 1, 2 or 4 GPUs; for 8 pass --config.batch_size=128).
# $PYTHON is the interpreter that runs it (default: the first python on PATH), e.g. PYTHON=.venv/bin/python.
set -euo pipefail
config=${1:?usage: multi_gpu.sh CONFIG WORKDIR [FLAGS...]}
workdir=${2:?usage: multi_gpu.sh CONFIG WORKDIR [FLAGS...]}
shift 2
exec "${PYTHON:-python}" -m mlres.main --config="$config" --workdir="$workdir" "$@"
