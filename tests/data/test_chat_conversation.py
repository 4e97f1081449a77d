"""Multi-turn training rows (chat_format.render_conversation): the ids are transformers'
``apply_chat_template`` (with a template) or our default family format (without), and the loss mask
is 1 exactly on every assistant turn (content and end-of-turn), the classic silent SFT bug if not."""

import json
from pathlib import Path

import pytest

from rolellm_jax.data import chat_format as chat
from tests.data.test_chat import CHATML, LLAMA3_LIKE, NO_SYSTEM, template_tok
from tests.helpers.rolebench_fixtures import all_texts, tiny_tokenizer

PROMPTS = Path(chat.__file__).parent / "prompts"
SYSTEM = "You are Captain Vale."
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is rain?"},
    {"role": "assistant", "content": "Rain is wet, hold the wind!"},
    {"role": "user", "content": "And snow?"},
    {"role": "assistant", "content": "Snow is cold."},
]
ANSWERS = [CONVERSATION[2]["content"], CONVERSATION[4]["content"]]


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def masked(ids, mask):
    return [i for i, m in zip(ids, mask, strict=True) if m]


def transformers_spans(tok, messages, end_of_turn_tail=0):
    """Token positions of each assistant turn, from transformers alone: the ids of the generation
    prompt of messages[:k] up to the ids of messages[:k+1] (less ``end_of_turn_tail`` tokens after the
    EOS), each a token prefix of the whole conversation's ids."""
    full = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    spans = set()
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            head = tok.apply_chat_template(messages[:k], add_generation_prompt=True, tokenize=True, return_dict=False)
            through = tok.apply_chat_template(messages[: k + 1], tokenize=True, return_dict=False)
            assert full[: len(head)] == head and full[: len(through)] == through
            spans |= set(range(len(head), len(through) - end_of_turn_tail))
    return list(full), spans


@pytest.mark.parametrize(
    "family,start_tokens",
    [
        ("llama", None),
        ("glm", ["[gMASK]", "sop"]),
        ("glm4", ["[gMASK]", "<sop>"]),
        ("qwen2", None),
        ("qwen3", None),
        ("mistral", None),
    ],
)
def test_default_formats_mask_every_answer_and_its_eos(family, start_tokens):
    tok = tiny_tokenizer(all_texts())
    if start_tokens:
        tok.add_special_tokens({"additional_special_tokens": start_tokens})
    fmt = json.loads((PROMPTS / f"chat_{chat.DEFAULT_FORMATS[family]}.json").read_text(encoding="utf-8"))
    start = tok.convert_tokens_to_ids(start_tokens) if start_tokens else [tok.bos_token_id]
    eos = tok.eos_token_id
    # the format's own strings, laid end to end as its "about" says
    first = start + encode(tok, fmt["prompt"].format(system=SYSTEM, question="What is rain?"))
    second = start + encode(tok, fmt["turn"].format(question="And snow?", round=2))
    a1, a2 = (encode(tok, fmt["answer"].format(answer=a)) + [eos] for a in ANSWERS)
    ids, mask = chat.render_conversation(tok, family, CONVERSATION)
    assert ids == first + a1 + second + a2
    assert mask == [0] * len(first) + [1] * len(a1) + [0] * len(second) + [1] * len(a2)
    assert tok.decode(masked(ids, mask)) == f"{ANSWERS[0]}</s>{ANSWERS[1]}</s>"
    # serving's prompt of each turn is a token prefix of the row, so the model is prompted as trained
    assert ids[: len(first)] == chat.render_chat_prompt(tok, family, CONVERSATION[:2])
    assert ids[: len(first + a1 + second)] == chat.render_chat_prompt(tok, family, CONVERSATION[:4])
    # one answered turn is exactly the single-turn training example
    one = chat.render_conversation(tok, family, CONVERSATION[:3])
    assert one == chat.render_example(tok, family, SYSTEM, "What is rain?", ANSWERS[0])


def test_default_format_without_system_opens_with_a_turn():
    tok = tiny_tokenizer(all_texts())
    ids, mask = chat.render_conversation(tok, "llama", CONVERSATION[1:])
    first = [tok.bos_token_id] + encode(tok, "[INST] What is rain? [/INST]")
    assert ids[: len(first)] == first and mask[: len(first)] == [0] * len(first)
    assert tok.decode(masked(ids, mask)) == f"{ANSWERS[0]}</s>{ANSWERS[1]}</s>"


@pytest.mark.parametrize("eos", [None, "<|im_end|>"])
def test_chatml_template_ids_are_apply_chat_template_and_mask_the_assistant_turns(eos):
    t = template_tok(CHATML, eos=eos)
    ids, mask = chat.render_conversation(t, "llama", CONVERSATION)
    # with EOS = <|im_end|> the newline after it separates turns and is not learnt
    expected_ids, spans = transformers_spans(t, CONVERSATION, end_of_turn_tail=1 if eos else 0)
    assert ids == expected_ids
    assert {i for i, m in enumerate(mask) if m} == spans
    tail = "<|im_end|>" if eos else "<|im_end|>\n"
    assert t.decode(masked(ids, mask)) == f"{ANSWERS[0]}{tail}{ANSWERS[1]}{tail}"


def test_llama3_like_template_learns_its_end_of_turn_token():
    t = tiny_tokenizer(all_texts())
    t.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    t.chat_template = LLAMA3_LIKE
    ids, mask = chat.render_conversation(t, "llama", CONVERSATION)
    expected_ids, spans = transformers_spans(t, CONVERSATION)
    assert ids == expected_ids and ids.count(t.bos_token_id) == 1
    assert {i for i, m in enumerate(mask) if m} == spans
    assert t.decode(masked(ids, mask)) == f"{ANSWERS[0]}<|eot_id|>{ANSWERS[1]}<|eot_id|>"


def test_template_without_system_turn_gets_it_on_top_of_the_first_question():
    t = template_tok(NO_SYSTEM, eos="<|im_end|>")
    ids, mask = chat.render_conversation(t, "llama", CONVERSATION)
    merged = [{"role": "user", "content": f"{SYSTEM}\n\nWhat is rain?"}, *CONVERSATION[2:]]
    expected_ids, spans = transformers_spans(t, merged, end_of_turn_tail=1)
    assert ids == expected_ids and {i for i, m in enumerate(mask) if m} == spans


def test_template_that_rewrites_earlier_turns_is_refused():
    # like templates that drop an earlier answer's reasoning: the prefix is no longer a prefix
    rewriting = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}(earlier){% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(chat.ChatFormatError, match=r"messages\[2\]: .*span cannot be found"):
        chat.render_conversation(template_tok(rewriting), "llama", CONVERSATION)


def test_token_across_the_edge_of_an_answer_is_an_error():
    # the generation prompt ends with a space and the answer starts with "w": the tiny vocabulary's
    # "▁w" token is half prompt, half answer
    glued = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    t = template_tok(glued)
    conversation = [{"role": "user", "content": "What is rain?"}, {"role": "assistant", "content": "wet."}]
    assert "▁w" in t.convert_ids_to_tokens(t.apply_chat_template(conversation, tokenize=True, return_dict=False))
    with pytest.raises(chat.ChatFormatError, match=r"messages\[1\]: token \d+ \('▁w'\) crosses the edge"):
        chat.render_conversation(t, "llama", conversation)


@pytest.mark.parametrize(
    "messages,match",
    [
        (CONVERSATION[:4], "last message must be the assistant's"),
        ([CONVERSATION[0], CONVERSATION[2]], r"messages\[1\].role='assistant': expected 'user'"),
        ([{"role": "user"}, CONVERSATION[2]], r"messages\[0\].content: must be a string"),
        (["hi"], r"messages\[0\].role='hi'"),
    ],
)
def test_bad_training_conversations_name_the_message(messages, match):
    with pytest.raises(chat.ChatFormatError, match=match):
        chat.render_conversation(tiny_tokenizer(all_texts()), "llama", messages)
