#!/usr/bin/env bash
# Issue 3's GPU checks in one command, for a machine with one NVIDIA GPU, a CUDA jax, and no network.
#
#   benchmarks/gpu_check.sh fetch          # on a machine with network: wheels the GPU image may lack -> .whl/
#   benchmarks/gpu_check.sh run OUT_DIR    # on the GPU machine, from the repository root (.whl/ beside it)
#
# run writes into OUT_DIR: env.txt (GPU, versions), gpu_tests.txt (tests/test_gpu.py: cuDNN attention
# against XLA's on packed rows, forward and backward), mfu.txt (train_throughput.py: MFU of the ~1B
# LLaMA at 2048 tokens, bf16, cuDNN attention, no remat; target >= 45% on an H100), smoke.txt and
# smoke_metrics.jsonl (the demo preset trained on the GPU in bf16 with cuDNN attention: the loss
# must fall; then killed mid-run and resumed from its checkpoint), and loss_curve.png.
# Each part has its own time limit (150 + 240 + 90 + 90 s at most: inside one 10-minute device
# call), so one failure still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.." || exit

fetch() {
  # Pure-Python packages the training CLI imports that a CUDA image often lacks (py3.12 wheels).
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "datasets==$(python3 -c 'import datasets; print(datasets.__version__)')" dill multiprocess tensorboardX
}

run() {
  local out=$1 py=python3
  mkdir -p "$out"
  if compgen -G ".whl/*.whl" >/dev/null; then  # only the ones missing there: never replace the image's own
    local missing=()
    for wheel in .whl/*.whl; do
      local name; name=$(basename "$wheel" | cut -d- -f1)
      $py -c "import importlib.metadata as m; m.version('$name')" 2>/dev/null || missing+=("$wheel")
    done
    [ ${#missing[@]} -gt 0 ] && $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${missing[@]}"
    export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $py -c "import jax, flax, optax, orbax.checkpoint as o, transformers; print('jax', jax.__version__, jax.devices()); print('flax', flax.__version__, 'optax', optax.__version__, 'transformers', transformers.__version__)"
    $py -c "import rolellm_jax.train" && echo "rolellm_jax.train imports"
    $py -c "import datasets, tensorboardX; print('datasets', datasets.__version__)"  # the smoke run reads the release with it
  } >"$out/env.txt" 2>&1
  cat "$out/env.txt"

  # cuDNN attention (packed rows' mask as a bias) and a bf16 cuDNN model against XLA attention
  JAX_PLATFORMS=cuda timeout 150 $py -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.txt"

  timeout 240 $py benchmarks/train_throughput.py --hidden 2048 --layers 16 --heads 16 --vocab 32000 --seq 2048 \
    --batch 8 --dtype bfloat16 --attention cudnn --remat none --skip-torch --warmup 3 --rounds 3 --steps 5 \
    2>&1 | tee "$out/mfu.txt"

  local run_dir=/tmp/gpu_smoke
  rm -rf "$run_dir"
  local train=("$py" -m rolellm_jax.train --model.dtype=bfloat16 --model.attention_impl=cudnn
               --train.output_dir="$run_dir" --checkpoint.every=20)
  {
    echo "== the demo preset in bf16 with cuDNN attention, killed (SIGKILL) once step 40 is checkpointed"
    "${train[@]}" &
    local pid=$!
    for _ in $(seq 900); do  # until step 40 is saved (orbax renames a finished save into place) or the run ends
      [ -d "$run_dir/checkpoints/40" ] && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.1
    done
    kill -9 $pid; wait $pid
    echo "== the same command again: resumes from the latest complete checkpoint"
    timeout 90 "${train[@]}"
  } >"$out/smoke.txt" 2>&1
  tail -n 20 "$out/smoke.txt"
  cp "$run_dir/metrics.jsonl" "$out/smoke_metrics.jsonl" 2>/dev/null
  find "$run_dir" -name "*.png" -exec cp {} "$out/" \; 2>/dev/null
}

case "${1:-}" in
  fetch) fetch ;;
  run) run "${2:?usage: benchmarks/gpu_check.sh run OUT_DIR}" ;;
  *) echo "usage: benchmarks/gpu_check.sh fetch | run OUT_DIR" >&2; exit 2 ;;
esac
