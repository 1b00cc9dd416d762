#!/usr/bin/env bash
# One process driving every local GPU (or those in GPUS): the mesh spans them all, the batch is
# split over mesh.data x mesh.fsdp devices. No jax.distributed: a single process needs none.
#
#   launch/single_host_gpus.sh --config configs/kd.py --workdir runs/kd [--config.mesh.fsdp=2 ...]
#   GPUS=0,1 launch/single_host_gpus.sh ...   # only these GPUs (CUDA_VISIBLE_DEVICES)
#   DRY_RUN=1 launch/single_host_gpus.sh ...  # print the command instead of running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="[GPUS=0,1,...] $0 --config configs/<method>.py --workdir <dir> [--config.key=value ...]"
parse_train_args "$@"
cmd=(env)
[[ -z ${GPUS:-} ]] || cmd+=("CUDA_VISIBLE_DEVICES=$GPUS")
cmd+=("${PYTHON:-python}" "${TRAIN_ARGS[@]}" --config.distributed.initialize=never)
run "${cmd[@]}"
