#!/usr/bin/env bash
# RoCIT on one machine with one or more GPUs: one process drives all local GPUs.
#
#   launch/gpu/single_node.sh [--config launch/configs/rolellama-7b-lora-1gpu.yaml] [--key=value ...]
#
# Runs where it is called from, so relative paths in the arguments mean what they say (the
# package must be installed: pip install -e '.[...]').
set -euo pipefail
# shellcheck source=launch/gpu/xla_flags.sh
source "$(dirname "$0")/xla_flags.sh"
exec python -m rolellm_jax.train "$@"
