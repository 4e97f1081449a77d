"""Whole-folder conversion between Hugging Face checkpoints and ours, for rolellm_jax/convert.py.

The tensors go through hf_read / hf_write (and model_folder for ours); here are the folder-level
rules: an --out that is a file, or that already holds a model, is refused before anything is read
(unless overwrite), and a source without tokenizer files is warned about.
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
    """A Hugging Face folder saved as our checkpoint at ``out``; returns its config."""
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
    """Our checkpoint written as a Hugging Face folder at ``out``; returns the weight files."""
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
