"""Hugging Face checkpoints <-> ours, as whole folders (the command line is rolellm_jax/convert.py).

hf-to-jax: a LlamaForCausalLM / GlmForCausalLM folder (or ChatGLM2/3 in its original naming) is
streamed tensor by tensor into preallocated stacked numpy arrays (rename + transpose only), then
saved as our checkpoint (model_folder): peak host memory stays near the checkpoint size.
jax-to-hf: our checkpoint back to a folder that `AutoModelForCausalLM.from_pretrained` loads
without remote code: sharded safetensors + index, config.json, generation_config.json, tokenizer.
Tensors keep their stored dtype both ways, so HF -> ours -> HF is bit-exact.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rolellm_jax.checkpoints.hf_read import read_hf_checkpoint
from rolellm_jax.checkpoints.hf_write import write_hf_checkpoint
from rolellm_jax.checkpoints.model_folder import PARAMS_DIR, load_model_checkpoint, save_model_checkpoint
from rolellm_jax.checkpoints.safetensors_io import CheckpointError
from rolellm_jax.checkpoints.tokenizer import has_tokenizer_files
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.parallel.storage import storage_path

log = logging.getLogger(__name__)


def hf_to_jax(hf_dir: str | Path, out: str | Path, overwrite: bool = False) -> ModelConfig:
    _check_out_folder(out)
    if (storage_path(out) / PARAMS_DIR).exists() and not overwrite:  # before reading the whole model
        raise CheckpointError(f"{out}: already holds a checkpoint; pass --overwrite to replace it")
    _warn_without_tokenizer(hf_dir, out)
    params, cfg = read_hf_checkpoint(hf_dir)
    save_model_checkpoint(out, params, cfg, tokenizer_dir=hf_dir, overwrite=overwrite)
    return cfg


def jax_to_hf(
    ckpt: str | Path, out: str | Path, max_shard_size: str | int = "2GB", overwrite: bool = False
) -> list[str]:
    _check_out_folder(out)
    held = [p.name for p in (Path(out) / "config.json", *sorted(Path(out).glob("*.safetensors"))) if p.is_file()]
    if held and not overwrite:  # e.g. --out pointed at the base model's own folder
        raise CheckpointError(
            f"{out}: already holds a Hugging Face model ({', '.join(held[:3])}); pass --overwrite to replace it"
        )
    params, cfg = load_model_checkpoint(ckpt)  # host numpy arrays in the stored dtype
    _warn_without_tokenizer(ckpt, out)
    return write_hf_checkpoint(params, cfg, out, tokenizer_dir=ckpt, max_shard_size=max_shard_size)


def _check_out_folder(out: str | Path) -> None:
    path = storage_path(out)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{out}: a file, not a folder (the converted model is a folder: choose another --out)")


def _warn_without_tokenizer(src: str | Path, out: str | Path) -> None:
    if not has_tokenizer_files(src):
        log.warning(
            "%s has no tokenizer files (tokenizer.json / tokenizer.model): %s gets none, so AutoTokenizer cannot "
            "load it; copy the base model's tokenizer files in",
            src,
            out,
        )
