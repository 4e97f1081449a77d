"""Write our parameter tree as a Hugging Face folder that `AutoModelForCausalLM.from_pretrained` loads
without remote code: sharded safetensors + index, config.json, generation_config.json, tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rolellm_jax.checkpoints.safetensors_io import CheckpointError, parse_size, save_sharded
from rolellm_jax.checkpoints.tensor_layout import get_leaf, param_shapes, tensor_specs
from rolellm_jax.checkpoints.tokenizer import GENERATION_CONFIG, copy_tokenizer_files
from rolellm_jax.models.config import ModelConfig


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
