#!/usr/bin/env bash
# A Cloud TPU pod slice: the same train command on every worker VM at once (gcloud ... ssh
# --worker=all); jax.distributed.initialize() finds the slice's hosts itself. Every worker needs
# jaxdistill checked out at REMOTE_DIR, and the workdir on a filesystem all workers share.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --config configs/kd.py \
#       --workdir /mnt/shared/runs/kd [--config.mesh.fsdp=4 ...]
#
# Env: TPU_NAME, ZONE (required); PROJECT (default: gcloud's); REMOTE_DIR (the checkout on the
# workers, relative to the home directory; default jaxdistill); PYTHON (default python3);
# DRY_RUN=1 prints the gcloud command instead of running it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
USAGE="TPU_NAME=<tpu> ZONE=<zone> $0 --config configs/<method>.py --workdir <shared dir> [--config.key=value ...]"
parse_train_args "$@"
[[ -n ${TPU_NAME:-} ]] || fail "set TPU_NAME to the TPU VM's name"
[[ -n ${ZONE:-} ]] || fail "set ZONE to the TPU's zone"
printf -v train '%q ' "${PYTHON:-python3}" "${TRAIN_ARGS[@]}" --config.distributed.initialize=always
remote="cd $(printf '%q' "${REMOTE_DIR:-jaxdistill}") && ${train% }"
cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all)
[[ -z ${PROJECT:-} ]] || cmd+=(--project="$PROJECT")
cmd+=(--command="$remote")
run "${cmd[@]}"
