"""Read a Hugging Face checkpoint folder (config.json + safetensors) into our parameter tree.

Tensors are streamed one by one into preallocated stacked numpy arrays (rename + transpose only),
so peak host memory stays near the checkpoint size. ChatGLM2/3's original naming goes through
chatglm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rolellm_jax.checkpoints.chatglm import chatglm_model_config, is_chatglm_config, read_chatglm_params
from rolellm_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsFolder
from rolellm_jax.checkpoints.tensor_layout import allocate, get_leaf, param_shapes, tensor_specs
from rolellm_jax.models.config import ModelConfig

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
