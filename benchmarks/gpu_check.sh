#!/usr/bin/env bash
# Issue 3's GPU checks, for a machine with one NVIDIA GPU, a CUDA jax, and no network.
#
#   benchmarks/gpu_check.sh fetch                  # with network: wheels the GPU image may lack -> .whl/
#   benchmarks/gpu_check.sh run OUT_DIR [PART...]  # on the GPU machine, from the repository root
#
# PARTs, in this order by default (each writes OUT_DIR/<part>.txt and has its own time limit, so
# one failure still leaves the others' results; all five fit one 10-minute device call, the last
# one least surely):
#   env           GPU, driver and package versions; whether our modules import
#   tests         tests/e2e/test_gpu.py: cuDNN attention on packed rows against XLA's, forward and
#                 backward, and a bf16 model with cuDNN attention against XLA attention
#   mfu           train_throughput.py: MFU of the ~1B LLaMA at 2048 tokens, bf16, cuDNN attention,
#                 no remat, scanned layers (issue 3's target: >= 45% on an H100)
#   smoke         the demo preset trained in bf16 with cuDNN attention, SIGKILLed once its step-40
#                 checkpoint exists and run again (it resumes there); its metrics and loss curve
#   mfu-unrolled  the same MFU run with unrolled layers: no stacked residual buffers (aot: 21.80
#                 instead of 35.81 GiB of temporaries on an H100)
set -uo pipefail
cd "$(dirname "$0")/.." || exit

fetch() {
  # Pure-Python packages the training CLI imports that a CUDA image often lacks (py3.12 wheels).
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "datasets==$(python3 -c 'import datasets; print(datasets.__version__)')" dill multiprocess tensorboardX
}

py=python3

setup() {
  if compgen -G ".whl/*.whl" >/dev/null; then  # only the ones missing there: never replace the image's own
    local missing=() wheel name
    for wheel in .whl/*.whl; do
      name=$(basename "$wheel" | cut -d- -f1)
      $py -c "import importlib.metadata as m; m.version('$name')" 2>/dev/null || missing+=("$wheel")
    done
    [ ${#missing[@]} -gt 0 ] && $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${missing[@]}"
    export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
}

part_env() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $py -c "import jax, flax, optax, orbax.checkpoint as o, transformers; print('jax', jax.__version__, jax.devices()); print('flax', flax.__version__, 'optax', optax.__version__, 'transformers', transformers.__version__)"
  $py -c "import rolellm_jax.train" && echo "rolellm_jax.train imports"
  $py -c "import datasets, tensorboardX; print('datasets', datasets.__version__)"  # the smoke run reads the release with it
}

part_tests() {
  JAX_PLATFORMS=cuda timeout 120 $py -m pytest -q -p no:cacheprovider tests/e2e/test_gpu.py
}

mfu() {
  timeout 180 $py benchmarks/train_throughput.py --hidden 2048 --layers 16 --heads 16 --vocab 32000 --seq 2048 \
    --batch 8 --dtype bfloat16 --attention cudnn --remat none --skip-torch --warmup 3 --rounds 3 --steps 5 "$@"
}

part_mfu() { mfu; }

part_mfu_unrolled() { mfu --unrolled; }

part_smoke() {
  local run_dir=/tmp/gpu_smoke pid
  rm -rf "$run_dir"
  local train=("$py" -m rolellm_jax.train --model.dtype=bfloat16 --model.attention_impl=cudnn
               --train.output_dir="$run_dir" --checkpoint.every=20)
  echo "== the demo preset in bf16 with cuDNN attention, killed (SIGKILL) once step 40 is checkpointed"
  "${train[@]}" &
  pid=$!
  for _ in $(seq 600); do  # until step 40 is saved (orbax renames a finished save into place) or the run ends
    [ -d "$run_dir/checkpoints/40" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  kill -9 $pid; wait $pid
  echo "== the same command again: resumes from the latest complete checkpoint"
  timeout 60 "${train[@]}"
  cp "$run_dir/metrics.jsonl" "$OUT_DIR/smoke_metrics.jsonl" 2>/dev/null
  find "$run_dir" -name "*.png" -exec cp {} "$OUT_DIR/" \; 2>/dev/null
}

run() {
  OUT_DIR=$1; shift
  mkdir -p "$OUT_DIR"
  setup
  local part parts=("$@")
  [ ${#parts[@]} -eq 0 ] && parts=(env tests mfu smoke mfu-unrolled)
  for part in "${parts[@]}"; do
    local fn="part_${part//-/_}"
    if ! declare -F "$fn" >/dev/null; then echo "unknown part: $part" >&2; continue; fi
    echo "===== $part"
    "$fn" 2>&1 | tee "$OUT_DIR/$part.txt" | tail -n 25
  done
}

case "${1:-}" in
  fetch) fetch ;;
  run) shift; run "${1:?usage: benchmarks/gpu_check.sh run OUT_DIR [PART...]}" "${@:2}" ;;
  *) echo "usage: benchmarks/gpu_check.sh fetch | run OUT_DIR [env tests mfu smoke mfu-unrolled]" >&2; exit 2 ;;
esac
