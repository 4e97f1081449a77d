"""Hugging Face checkpoints <-> ours. `python -m rolellm_jax.convert hf-to-jax|jax-to-hf ...`

hf-to-jax: a LlamaForCausalLM / GlmForCausalLM folder (or ChatGLM2/3 in its original naming) is
streamed tensor by tensor into preallocated stacked numpy arrays (rename + transpose only), then
saved as our checkpoint (model_io): peak host memory stays near the checkpoint size.
jax-to-hf: our checkpoint back to a folder that `AutoModelForCausalLM.from_pretrained` loads
without remote code: sharded safetensors + index, config.json, generation_config.json, tokenizer.
Tensors keep their stored dtype both ways, so HF -> ours -> HF is bit-exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rolellm_jax.chatglm import chatglm_model_config, is_chatglm_config, read_chatglm_params
from rolellm_jax.hf_layout import allocate, get_leaf, param_shapes, tensor_specs
from rolellm_jax.models.config import ConfigError, ModelConfig
from rolellm_jax.safetensors_io import CheckpointError, SafetensorsFolder, parse_size, save_sharded
from rolellm_jax.storage import is_url, storage_path
from rolellm_jax.tokenizer import TOKENIZER_FILES

GENERATION_CONFIG = "generation_config.json"
# Buffers some exports carry that the config already determines.
IGNORED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)


def read_hf_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def read_hf_checkpoint(folder: str | Path) -> tuple[dict, ModelConfig]:
    """(numpy parameter tree, ModelConfig) of an HF folder; param_dtype = the stored dtype."""
    folder = Path(folder)
    hf = read_hf_config(folder)
    source = str(folder / "config.json")
    cfg = chatglm_model_config(hf, source) if is_chatglm_config(hf) else ModelConfig.from_hf_config(hf, source)
    tensors = SafetensorsFolder(folder)  # refuses pickle-only folders before any work
    embed = "transformer.embedding.word_embeddings.weight" if is_chatglm_config(hf) else "model.embed_tokens.weight"
    dtype = np.dtype(tensors.dtype(embed))
    if is_chatglm_config(hf):
        params = read_chatglm_params(tensors, cfg, dtype)
    else:
        params = _read_standard_params(tensors, cfg, dtype)
    return params, cfg.replace(param_dtype=dtype.name)


def _read_standard_params(tensors: SafetensorsFolder, cfg: ModelConfig, dtype: np.dtype) -> dict:
    params = allocate(param_shapes(cfg), dtype)
    expected = set()
    for spec in tensor_specs(cfg):
        leaf = get_leaf(params, spec.path)
        for layer in range(cfg.num_hidden_layers) if spec.layered else [None]:
            name = spec.hf_tensor_name(layer)
            expected.add(name)
            array = tensors.read(name, spec.hf_shape)
            # Assigning the transposed view copies straight into the stacked array: no temporary.
            leaf[... if layer is None else layer] = array.T if spec.transpose else array
    for name in tensors.names():
        tied_head = cfg.tie_word_embeddings and name == "lm_head.weight"
        if name not in expected and not tied_head and not name.endswith(IGNORED_TENSOR_SUFFIXES):
            raise CheckpointError(f"{tensors.folder}: unexpected tensor {name} for this config")
    return params


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer (and generation config) files present in `src`; returns their names."""
    src, dst = storage_path(src), storage_path(dst)  # either may be a bucket URL
    if src.resolve() == dst.resolve():
        return []
    copied = []
    for name in (*TOKENIZER_FILES, GENERATION_CONFIG):
        if (src / name).is_file():
            (src / name).copy(dst / name, overwrite=True)
            copied.append(name)
    return copied


def write_hf_checkpoint(
    params: dict,
    cfg: ModelConfig,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    max_shard_size: str | int = "2GB",
) -> list[str]:
    """Write `params` (our tree, numpy or host jax arrays) as an HF folder; returns the weight files."""
    out_dir = Path(out_dir)
    entries = {}  # hf name -> (spec, layer)
    for spec in tensor_specs(cfg):
        for layer in range(cfg.num_hidden_layers) if spec.layered else [None]:
            entries[spec.hf_tensor_name(layer)] = (spec, layer)
    flat_shapes = param_shapes(cfg)
    dtype = None
    for spec, _ in entries.values():
        leaf = get_leaf(params, spec.path)
        want = get_leaf(flat_shapes, spec.path)
        if tuple(leaf.shape) != tuple(want):
            name = "/".join(spec.path)
            raise CheckpointError(f"parameter {name} has shape {list(leaf.shape)}, expected {list(want)}")
        dtype = dtype or np.dtype(leaf.dtype)

    def materialise(name: str) -> np.ndarray:
        spec, layer = entries[name]
        array = np.asarray(get_leaf(params, spec.path))
        array = array if layer is None else array[layer]
        return array.T if spec.transpose else array

    tensors = [(name, spec.hf_shape, dtype) for name, (spec, _) in entries.items()]
    files = save_sharded(out_dir, tensors, materialise, parse_size(max_shard_size))
    hf_config = cfg.replace(param_dtype=dtype.name).to_hf_config()
    hf_config["dtype"] = dtype.name  # transformers 5 spelling; to_hf_config also writes torch_dtype
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    copied = copy_tokenizer_files(tokenizer_dir, out_dir) if tokenizer_dir else []
    if GENERATION_CONFIG not in copied:
        generation = {k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        (out_dir / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2) + "\n")
    return files


def hf_to_jax(hf_dir: str | Path, out: str | Path, overwrite: bool = False) -> ModelConfig:
    from rolellm_jax.model_io import save_model_checkpoint

    params, cfg = read_hf_checkpoint(hf_dir)
    save_model_checkpoint(out, params, cfg, tokenizer_dir=hf_dir, overwrite=overwrite)
    return cfg


def jax_to_hf(ckpt: str | Path, out: str | Path, max_shard_size: str | int = "2GB", overwrite: bool = False) -> list[str]:
    from rolellm_jax.model_io import load_model_checkpoint

    held = [p.name for p in (Path(out) / "config.json", *sorted(Path(out).glob("*.safetensors"))) if p.is_file()]
    if held and not overwrite:  # e.g. --out pointed at the base model's own folder
        raise CheckpointError(f"{out}: already holds a Hugging Face model ({', '.join(held[:3])}); "
                              "pass --overwrite to replace it")
    params, cfg = load_model_checkpoint(ckpt)  # host numpy arrays in the stored dtype
    return write_hf_checkpoint(params, cfg, out, tokenizer_dir=ckpt, max_shard_size=max_shard_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rolellm_jax.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_jax = sub.add_parser("hf-to-jax", help="HF safetensors folder -> our orbax checkpoint")
    to_jax.add_argument("--hf", required=True, help="HF checkpoint folder (config.json + *.safetensors)")
    to_jax.add_argument("--out", required=True, help="checkpoint folder to write, or a bucket URL (gs://...)")
    to_jax.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    to_hf = sub.add_parser("jax-to-hf", help="our checkpoint -> HF folder for AutoModelForCausalLM")
    to_hf.add_argument("--ckpt", required=True, help="our checkpoint folder, or a bucket URL (gs://...)")
    to_hf.add_argument("--out", required=True, help="HF folder to write")
    to_hf.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    to_hf.add_argument(
        "--max-shard-size", default="2GB", help="largest shard, e.g. 2GB or 500MB (memory: model + ~2 shards)"
    )
    args = parser.parse_args(argv)
    hf_folder = ("--hf", args.hf) if args.command == "hf-to-jax" else ("--out", args.out)
    if is_url(hf_folder[1]):  # safetensors and transformers read and write local files
        parser.error(f"{hf_folder[0]} {hf_folder[1]}: the Hugging Face folder must be local")
    try:
        if args.command == "hf-to-jax":
            cfg = hf_to_jax(args.hf, args.out, overwrite=args.overwrite)
            print(f"wrote {args.out} ({cfg.family}, {cfg.num_hidden_layers} layers, {cfg.param_dtype})")
        else:
            files = jax_to_hf(args.ckpt, args.out, max_shard_size=args.max_shard_size, overwrite=args.overwrite)
            print(f"wrote {args.out} ({len(files)} safetensors file(s))")
    except (CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
