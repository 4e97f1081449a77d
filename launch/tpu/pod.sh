#!/usr/bin/env bash
# Run RoCIT on a Cloud TPU VM pod slice (or several slices) through queued resources.
#
#   launch/tpu/pod.sh [--dry-run] create|setup|train|logs|stop|delete   (--dry-run may also come last)
#
# Settings come from the environment (defaults in brackets):
#   PROJECT [gcloud's default]  ZONE [us-east5-a]  NAME [rolellm]  ACCELERATOR [v5p-16]
#   RUNTIME [v2-alpha-tpuv5]  SLICES [1]: more than 1 makes a multi-slice job
#   SPOT [0]: 1 asks for spot capacity   BUCKET [gs://$NAME-rolellm]: base models, data, and each run's
#   checkpoints, loss curve and export under runs/$NAME/ (the pod's hosts share no disk)
#   CONFIG [launch/configs/rolellama-7b.yaml]   TRAIN_ARGS: extra dotted overrides
# --dry-run prints every gcloud command instead of running it.
set -euo pipefail

DRY_RUN=0
ACTION=""
for arg in "$@"; do  # in any order: a --dry-run after the action must not run the real commands
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    create|setup|train|logs|stop|delete)
      if [[ -n "$ACTION" ]]; then ACTION=invalid; else ACTION="$arg"; fi ;;
    *) ACTION=invalid ;;
  esac
done

ZONE="${ZONE:-us-east5-a}"
NAME="${NAME:-rolellm}"
ACCELERATOR="${ACCELERATOR:-v5p-16}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5}"
SLICES="${SLICES:-1}"
SPOT="${SPOT:-0}"
BUCKET="${BUCKET:-gs://${NAME}-rolellm}"
CONFIG="${CONFIG:-launch/configs/rolellama-7b.yaml}"
TRAIN_ARGS="${TRAIN_ARGS:-}"
REPO_DIR="rolellm-jax"

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

project_flags=()
if [[ -n "${PROJECT:-}" ]]; then project_flags=(--project "$PROJECT"); fi

# The TPU VM names: one per slice (queued resources name them PREFIX-0, PREFIX-1, ...).
nodes() {
  if [[ "$SLICES" == 1 ]]; then
    echo "$NAME"
  else
    for ((i = 0; i < SLICES; i++)); do echo "${NAME}-${i}"; done
  fi
}

on_all_workers() {
  local command="$1" node
  for node in $(nodes); do
    run gcloud compute tpus tpu-vm ssh "$node" "${project_flags[@]}" --zone "$ZONE" \
      --worker=all --command "$command"
  done
}

case "$ACTION" in
  create)
    size_flags=(--node-id "$NAME")
    if [[ "$SLICES" != 1 ]]; then size_flags=(--node-count "$SLICES" --node-prefix "$NAME"); fi
    spot_flags=()
    if [[ "$SPOT" == 1 ]]; then spot_flags=(--spot); fi
    run gcloud compute tpus queued-resources create "${NAME}-qr" "${project_flags[@]}" \
      --zone "$ZONE" --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME" \
      "${size_flags[@]}" "${spot_flags[@]}"
    run gcloud storage buckets create "$BUCKET" "${project_flags[@]}" --location "${ZONE%-*}"
    ;;
  setup)
    # Ship this checkout (committed files only) and install it on every worker of every slice.
    archive="/tmp/${REPO_DIR}.tar.gz"
    run git archive --format=tar.gz --prefix="${REPO_DIR}/" -o "$archive" HEAD
    for node in $(nodes); do
      run gcloud compute tpus tpu-vm scp "$archive" "${node}:~/" "${project_flags[@]}" \
        --zone "$ZONE" --worker=all
    done
    on_all_workers "rm -rf ${REPO_DIR} && tar xzf ${REPO_DIR}.tar.gz && pip install -q -e './${REPO_DIR}[tpu]'"
    ;;
  train)
    # Every worker runs the same command; rolellm_jax initialises jax.distributed itself.
    on_all_workers "cd ${REPO_DIR} && nohup python -m rolellm_jax.train --config ${CONFIG} \
--checkpoint.dir=${BUCKET}/runs/${NAME}/checkpoints ${TRAIN_ARGS} > ~/train.log 2>&1 &"
    ;;
  logs)
    first_node="$(nodes | head -n 1)"
    run gcloud compute tpus tpu-vm ssh "$first_node" "${project_flags[@]}" --zone "$ZONE" \
      --worker=0 --command "tail -n +1 -f ~/train.log"
    ;;
  stop)
    on_all_workers "pkill -f rolellm_jax.train || true"
    ;;
  delete)
    run gcloud compute tpus queued-resources delete "${NAME}-qr" "${project_flags[@]}" \
      --zone "$ZONE" --force --quiet
    ;;
  *)
    echo "usage: $0 [--dry-run] create|setup|train|logs|stop|delete" >&2
    exit 2
    ;;
esac
