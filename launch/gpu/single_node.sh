#!/usr/bin/env bash
# RoCIT on one machine with one or more GPUs: one process drives all local GPUs.
#
#   launch/gpu/single_node.sh [--config launch/configs/rolellama-7b-lora-1gpu.yaml] [--key=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=launch/gpu/xla_flags.sh
source launch/gpu/xla_flags.sh
exec python -m rolellm_jax.train "$@"
