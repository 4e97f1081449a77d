"""A tiny random model with the tiny test tokenizer, for the serving engine and server tests."""

from __future__ import annotations

import functools

from flax import nnx

from rolellm_jax.models import build_model
from tests.helpers.rolebench_fixtures import all_texts, tiny_tokenizer
from tests.helpers.tiny_models import tiny_config


@functools.cache
def _tokenizer_texts() -> tuple[str, ...]:
    return tuple(all_texts())


def tiny_serving_model(seed: int = 0):
    """(model, tokenizer): a 2-layer float32 LLaMA over the tiny tokenizer's vocabulary."""
    tokenizer = tiny_tokenizer(list(_tokenizer_texts()))
    cfg = tiny_config(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    model = build_model(cfg, rngs=nnx.Rngs(seed))
    # Random weights pick byte-fallback tokens as often as any: their invalid UTF-8 has no one right
    # incremental decoding. Zero logits for them (and the unknown token) keep greedy text valid.
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    unwanted = [i for i, t in enumerate(tokens) if t.startswith("<0x") or i == tokenizer.unk_token_id]
    model.lm_head.kernel[...] = model.lm_head.kernel[...].at[:, unwanted].set(0.0)
    return model, tokenizer


def prompts_of(tokenizer, questions: list[str]) -> list[list[int]]:
    return [tokenizer(q, add_special_tokens=False)["input_ids"] for q in questions]
