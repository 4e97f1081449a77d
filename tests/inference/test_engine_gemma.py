"""The continuous-batching engine on a Gemma 2 model: its 4-token sliding window and soft-caps must survive
the engine's cache layout (rows right-aligned at the shared index, shifted as requests come and go), so
greedy tokens equal generate()'s, which tests/models/test_gemma.py checks against transformers."""

from __future__ import annotations

import jax
from flax import nnx

from rolellm_jax.inference import kv_slots
from rolellm_jax.inference.engine import Engine, Request
from rolellm_jax.inference.generate import SamplingConfig, generate
from rolellm_jax.models import build_model
from rolellm_jax.models.config import ModelConfig
from tests.helpers.serving_fixtures import tiny_serving_model
from tests.inference.test_engine import random_prompts, run_all


def test_gemma2_greedy_in_the_engine_equals_generate(monkeypatch) -> None:
    _, tokenizer = tiny_serving_model()
    cfg = ModelConfig(
        family="gemma2",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=4,
        layer_types=("sliding_attention", "full_attention"),
        query_pre_attn_scalar=24,
        attn_logit_softcapping=2.0,
        final_logit_softcapping=3.0,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        dtype="float32",
    )
    model = build_model(cfg, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)  # weights of std 0.15, not 0.02: attention peaked enough for the window
    nnx.update(model, jax.tree.map(lambda a: a * 7.5, state))
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    unwanted = [i for i, t in enumerate(tokens) if t.startswith("<0x") or i == tokenizer.unk_token_id]
    model.lm_head.kernel[...] = model.lm_head.kernel[...].at[:, unwanted].set(0.0)  # valid UTF-8 text (see fixture)
    eos = (tokenizer.eos_token_id,)
    lengths, budgets = (5, 17, 3, 9, 12), (20, 6, 14, 20, 9)
    prompts = random_prompts(lengths)
    # one left-padded batch (one compilation); a shorter budget's greedy tokens are a prefix of a longer one's
    full = generate(model, prompts, SamplingConfig(max_new_tokens=max(budgets), eos_token_ids=eos), batch_size=5)
    want = [ids[:m] for ids, m in zip(full, budgets)]
    shifts = []
    real_shift = kv_slots.shift_cache
    monkeypatch.setattr(
        kv_slots, "shift_cache", lambda cache, shift: (shifts.append(int(shift)), real_shift(cache, shift))[1]
    )
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=2, max_len=40, prefill_budget=16).start()
    try:
        together = run_all(engine, [Request(tuple(p), m) for p, m in zip(prompts, budgets)])
    finally:
        engine.stop()
    assert [list(f.token_ids) for _, f in together] == want
    assert any(x > 0 for x in shifts) and any(x < 0 for x in shifts), shifts  # rows moved while live
