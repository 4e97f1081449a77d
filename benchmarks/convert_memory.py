"""Peak host memory of `hf-to-jax` on a random ~0.5B LLaMA, against the obvious numpy way.

    python benchmarks/convert_memory.py [--dtype bfloat16|float32] [--workdir DIR]

Writes a random LlamaForCausalLM checkpoint (sharded safetensors, numpy only, no torch), then
converts it twice, each in a fresh subprocess that reports its own peak RSS (VmHWM):
  streaming  rolellm_jax.convert.hf_to_jax (tensor by tensor into preallocated stacked arrays,
             orbax save without host copies)
  naive      safetensors.numpy.load_file on every shard, np.stack of the transposed layers,
             orbax StandardCheckpointer().save (the obvious implementation)
and prints peak RSS, checkpoint bytes and their ratio (target: streaming <= ~1.3x), plus the
RSS of a process that only imported the same modules (the fixed cost of jax/orbax). Finally
`jax-to-hf` of the streamed checkpoint, with shards 1/7 of the checkpoint as 2GB shards are of a
7B model in bf16 (export holds the restored tree plus about two copies of one shard).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

# ~0.47B parameters (Qwen2-0.5B-like widths with LLaMA layout).
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "max_position_embeddings": 2048,
}

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
os.environ.setdefault("JAX_PLATFORMS", "cpu")
mode, hf, out, shard = sys.argv[1:5]
import numpy as np, orbax.checkpoint as ocp, jax
from rolellm_jax.checkpoints import hf_convert as convert
start = time.perf_counter()
if mode == "streaming":
    convert.hf_to_jax(hf, out)
elif mode == "export":  # hf is our checkpoint here
    convert.jax_to_hf(hf, out, max_shard_size=int(shard))
elif mode == "naive":
    import glob
    from safetensors.numpy import load_file
    from rolellm_jax.checkpoints.tensor_layout import tensor_specs
    from rolellm_jax.models.config import ModelConfig
    cfg = ModelConfig.from_hf_config(json.load(open(os.path.join(hf, "config.json"))))
    state = {}
    for f in sorted(glob.glob(os.path.join(hf, "*.safetensors"))):
        state.update(load_file(f))
    tree = {}
    for spec in tensor_specs(cfg):
        layers = range(cfg.num_hidden_layers) if spec.layered else [None]
        arrays = [state.pop(spec.hf_tensor_name(i)) for i in layers]
        arrays = [a.T if spec.transpose else a for a in arrays]
        node = tree
        for key in spec.path[:-1]:
            node = node.setdefault(key, {})
        node[spec.path[-1]] = np.stack(arrays) if spec.layered else arrays[0]
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(out), tree)
seconds = time.perf_counter() - start
# VmHWM: this process's own peak RSS (ru_maxrss would also count the parent's peak before exec).
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_rss": hwm * 1024, "seconds": seconds}))
"""


def write_random_checkpoint(folder: Path, dtype: str, max_shard_bytes: int = 1 << 30) -> int:
    """A random LLaMA in HF naming and layout, written shard by shard; returns its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    c = CONFIG
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    head_dim = d // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    shapes = {"model.embed_tokens.weight": (v, d)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
            p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d), p + "mlp.down_proj.weight": (d, f),
        }  # fmt: skip
    shapes |= {"model.norm.weight": (d,), "lm_head.weight": (v, d)}
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(0)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * np_dtype.itemsize
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = shape
        size += nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: (0.02 * rng.standard_normal(s, dtype=np.float32)).astype(np_dtype) for n, s in shard.items()}
        save_file(tensors, folder / file, metadata={"format": "pt"})
        total += sum(t.nbytes for t in tensors.values())
        weight_map |= {n: file for n in shard}
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({**CONFIG, "torch_dtype": dtype}))
    return total


def run_child(mode: str, hf: Path, out: Path, shard: int = 0) -> dict:
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(hf), str(out), str(shard)], cwd=repo, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        nbytes = write_random_checkpoint(tmp / "hf", args.dtype)
        params = nbytes // np.dtype(ml_dtypes.bfloat16 if args.dtype == "bfloat16" else args.dtype).itemsize
        print(f"checkpoint: random LLaMA, {params / 1e9:.3f}B params, {args.dtype}, {nbytes / 2**30:.3f} GiB")
        baseline = run_child("imports-only", tmp / "hf", tmp / "none")
        print(f"{'imports only':>14}: peak RSS {baseline['peak_rss'] / 2**30:.3f} GiB")
        for mode in ("streaming", "naive"):
            result = run_child(mode, tmp / "hf", tmp / mode)
            peak = result["peak_rss"]
            print(
                f"{mode:>14}: peak RSS {peak / 2**30:.3f} GiB = {peak / nbytes:.2f}x checkpoint "
                f"({(peak - baseline['peak_rss']) / nbytes:.2f}x above the import baseline), {result['seconds']:.1f} s"
            )
        # Back to HF with shards ~1/7 of the checkpoint (as 2GB shards are for a 7B in bf16).
        shard = nbytes // 7
        result = run_child("export", tmp / "streaming", tmp / "export", shard)
        peak = result["peak_rss"]
        print(
            f"{'jax-to-hf':>14}: peak RSS {peak / 2**30:.3f} GiB = {peak / nbytes:.2f}x checkpoint "
            f"({(peak - baseline['peak_rss']) / nbytes:.2f}x above the import baseline), {result['seconds']:.1f} s, "
            f"shards of {shard / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
