"""Gemma's chat turns: the default format of gemma2 / gemma3 and a template that refuses a system message.

Gemma has no system role: the system text opens the first user turn, then a blank line, then the
question, in our default format and (by chat_format's fallback) with a template that raises on a
system message. The loss mask must cover exactly the model turn: the answer and its end-of-turn.
"""

import pytest

from rolellm_jax.data import chat_format as chat
from rolellm_jax.data.chat_export import export_chat_template
from tests.data.test_chat import ANSWER, CONVERSATION, QUESTION, SYSTEM, encode
from tests.helpers.rolebench_fixtures import all_texts, tiny_tokenizer

TURN_MARKERS = ["<start_of_turn>", "<end_of_turn>"]
# Gemma-like turns written for this test: BOS first, "model" for the assistant, and no system role at all
GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('this template has no system role') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
PROMPT = f"<start_of_turn>user\n{SYSTEM}\n\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n"


def gemma_tok(template=None, eos=None):
    t = tiny_tokenizer(all_texts())
    t.add_special_tokens({"additional_special_tokens": TURN_MARKERS})  # as a Gemma tokenizer has them
    t.chat_template = template
    if eos:
        t.eos_token = eos
    return t


def answer_span(t, ids, mask) -> list[int]:
    assert mask == [0] * mask.index(1) + [1] * (len(mask) - mask.index(1))  # one contiguous span, at the end
    return [i for i, m in zip(ids, mask) if m]


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_default_format_masks_exactly_the_answer_and_end_of_turn(family):
    t = gemma_tok()
    end_of_turn = t.convert_tokens_to_ids("<end_of_turn>")
    ids, mask = chat.render_example(t, family, SYSTEM, QUESTION, ANSWER)
    assert ids[: mask.index(1)] == [t.bos_token_id] + encode(t, PROMPT)  # BOS once, as Gemma's tokenizer starts
    assert answer_span(t, ids, mask) == encode(t, ANSWER) + [end_of_turn, t.eos_token_id]
    assert chat.render_prompt(t, family, SYSTEM, QUESTION) == ids[: mask.index(1)]


def test_default_format_lays_later_turns_after_the_training_row():
    t = gemma_tok()
    ids = chat.render_chat_prompt(t, "gemma3", CONVERSATION)
    first, _ = chat.render_example(t, "gemma3", SYSTEM, QUESTION, ANSWER)
    assert ids == first + [t.bos_token_id] + encode(
        t, "<start_of_turn>user\nAnd snow?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_template_refusing_a_system_message_gets_it_on_top_of_the_first_user_turn():
    t = gemma_tok(GEMMA_LIKE, eos="<end_of_turn>")  # the end of a model turn stops generation
    merged = [{"role": "user", "content": f"{SYSTEM}\n\n{QUESTION}"}]
    expected = t.apply_chat_template(merged, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert chat.render_prompt(t, "gemma2", SYSTEM, QUESTION) == list(expected)
    ids, mask = chat.render_example(t, "gemma2", SYSTEM, QUESTION, ANSWER)
    assert ids[: mask.index(1)] == list(expected) and ids.count(t.bos_token_id) == 1 and ids[0] == t.bos_token_id
    assert t.decode(expected, skip_special_tokens=False).endswith(PROMPT)
    # exactly the model turn's content and its end-of-turn (the newline after it separates turns)
    assert answer_span(t, ids, mask) == encode(t, ANSWER) + [t.eos_token_id]
    conversation = chat.render_chat_prompt(t, "gemma2", CONVERSATION)
    turns = [{"role": "user", "content": f"{SYSTEM}\n\n{QUESTION}"}, *CONVERSATION[2:]]
    assert conversation == t.apply_chat_template(turns, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_template_whose_turn_end_is_not_eos_learns_the_turn_and_eos():
    """With EOS another token than <end_of_turn>, the model turn as the template writes it is learned and
    EOS appended, as for every template that does not emit EOS (chat_format's rule)."""
    t = gemma_tok(GEMMA_LIKE)
    ids, mask = chat.render_example(t, "gemma3", SYSTEM, QUESTION, ANSWER)
    assert t.decode(answer_span(t, ids, mask)) == ANSWER + "<end_of_turn>\n" + t.eos_token


def test_exported_template_renders_the_default_format_for_transformers():
    """A Gemma trained without a chat_template exports one that gives transformers the training prompt."""
    t = gemma_tok()
    template = export_chat_template(t, "gemma3")
    assert template is not None
    t.chat_template = template
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    ids = t.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(ids) == [t.bos_token_id] + encode(t, PROMPT)
