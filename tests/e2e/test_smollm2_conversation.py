"""Multi-turn training rows with the real SmolLM2-135M-Instruct tokenizer and its ChatML chat_template:
the ids are transformers' ``apply_chat_template`` and the loss mask is exactly the assistant turns."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rolellm_jax.data.chat_format import render_conversation, role_system_text
from tests.data.test_chat_conversation import masked, transformers_spans

TURNS = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "Sherlock Holmes, of 221B Baker Street."},
    {"role": "user", "content": "What can you tell about me from my boots?"},
    {"role": "assistant", "content": "Elementary: you walked here through clay, in a hurry."},
    {"role": "user", "content": "你好吗？"},
    {"role": "assistant", "content": "很好，谢谢。"},
]
SYSTEM = {"role": "system", "content": role_system_text("en", "Sherlock Holmes", "The famous detective")}


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.parametrize("messages", [[SYSTEM, *TURNS], TURNS], ids=["with-system", "template-default-system"])
def test_smollm2_conversation_ids_and_mask_are_transformers(tokenizer, messages):
    assert tokenizer.eos_token == "<|im_end|>"
    ids, mask = render_conversation(tokenizer, "llama", messages)
    expected_ids, spans = transformers_spans(tokenizer, messages, end_of_turn_tail=1)  # "\n" after <|im_end|>
    assert ids == expected_ids
    assert {i for i, m in enumerate(mask) if m} == spans
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert tokenizer.decode(masked(ids, mask)) == "".join(a + "<|im_end|>" for a in answers)
