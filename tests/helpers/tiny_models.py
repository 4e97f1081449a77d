"""Tiny model shapes for the tests: one 2-layer grouped-query shape (width 32, 4 heads, 2 kv heads),
as our ModelConfig or as a transformers config, any field overridable."""

from __future__ import annotations

from typing import Any

from rolellm_jax.models.config import ModelConfig

TINY_SHAPE: dict[str, Any] = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def tiny_config(**overrides: Any) -> ModelConfig:
    """Our ModelConfig of the tiny shape (a LLaMA unless ``family`` is given)."""
    return ModelConfig(**{"family": "llama", **TINY_SHAPE, **overrides})


def tiny_hf_config(config_class: type, **overrides: Any):
    """A transformers config (``LlamaConfig``, ``GlmConfig``, ...) of the tiny shape."""
    return config_class(**{**TINY_SHAPE, **overrides})


def tiny_model_flags(**overrides: Any) -> list[str]:
    """The tiny shape as train/aot command-line flags (``--model.hidden_size=32`` ...)."""
    return [f"--model.{key}={value}" for key, value in {**TINY_SHAPE, **overrides}.items()]
