#!/usr/bin/env bash
# Several machines without a scheduler: run this on every host, with the same arguments except
# the process index (0 on the coordinator host, whose address all of them give).
#   bash launch/multi_host.sh COORDINATOR_HOST:PORT NUM_PROCESSES PROCESS_INDEX CONFIG WORKDIR [FLAGS...]
# e.g. on host A (10.0.0.1): bash launch/multi_host.sh 10.0.0.1:12345 2 0 configs/cifar100_res122i.py /shared/runs/r
#      on host B:            bash launch/multi_host.sh 10.0.0.1:12345 2 1 configs/cifar100_res122i.py /shared/runs/r
# WORKDIR must be one folder every host can write (a shared file system): orbax writes each
# checkpoint together from all processes; metrics.jsonl and summary.json come from process 0.
# $PYTHON is the interpreter that runs it (default: the first python on PATH).
set -euo pipefail
usage='usage: multi_host.sh COORDINATOR_HOST:PORT NUM_PROCESSES PROCESS_INDEX CONFIG WORKDIR [FLAGS...]'
export JAX_COORDINATOR_ADDRESS=${1:?$usage}
export JAX_NUM_PROCESSES=${2:?$usage}
export JAX_PROCESS_ID=${3:?$usage}
config=${4:?$usage}
workdir=${5:?$usage}
shift 5
exec "${PYTHON:-python}" -m mlres.main --config="$config" --workdir="$workdir" "$@"
