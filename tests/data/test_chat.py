"""Chat rendering: default formats per family, chat_template tokenizers, loss mask on answers."""

from pathlib import Path

import pytest

from rolellm_jax.data import chat_export
from rolellm_jax.data import chat_format as chat
from tests.helpers.rolebench_fixtures import all_texts, tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NO_SYSTEM = (  # like templates that refuse a system turn
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SYSTEM, QUESTION, ANSWER = "You are Captain Vale.", "What is rain?", "Rain is wet, hold the wind!"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(all_texts())


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def template_tok(template, eos=None):
    t = tiny_tokenizer(all_texts())
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    t.chat_template = template
    if eos:
        t.eos_token = eos
    return t


def test_role_system_text_fills_the_shared_templates():
    en = chat.role_system_text("eng", "Captain Vale", "A gruff captain")
    assert en.startswith("You are Captain Vale, your description is: A gruff captain. Now please answer")
    zh = chat.role_system_text("zh", "剑客", "沉默的剑客")
    assert zh.startswith("你是剑客，你的特征描述是：沉默的剑客。")
    raw = (REPO / "data_gen/prompts/role_system_en.txt").read_text(encoding="utf-8").strip()
    assert en == raw.format(role="Captain Vale", description="A gruff captain")
    with pytest.raises(chat.ChatFormatError, match="lang='fr'"):
        chat.role_system_text("fr", "x", "y")


def test_llama_default_format_masks_only_the_answer_and_eos(tok):
    ids, mask = chat.render_example(tok, "llama", SYSTEM, QUESTION, ANSWER)
    prompt = f"[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{QUESTION} [/INST]"
    answer_ids = encode(tok, ANSWER)
    assert ids == [tok.bos_token_id] + encode(tok, prompt) + answer_ids + [tok.eos_token_id]
    assert sum(mask) == len(answer_ids) + 1  # exact count: answer tokens and EOS
    assert mask == [0] * (len(ids) - sum(mask)) + [1] * sum(mask)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == ANSWER + "</s>"
    assert chat.render_prompt(tok, "llama", SYSTEM, QUESTION) == ids[: len(ids) - sum(mask)]


def test_glm_default_format_is_chatglm2_round_with_system_in_the_question(tok):
    ids, mask = chat.render_example(tok, "glm", SYSTEM, QUESTION, ANSWER)
    n_prompt = mask.index(1)
    assert ids[0] == tok.bos_token_id  # no [gMASK]/sop in this vocabulary: BOS instead
    assert tok.decode(ids[1:n_prompt]) == f"[Round 1]\n\n问：{SYSTEM}\n\n{QUESTION}\n\n答："
    assert tok.decode(ids[n_prompt:]) == ANSWER + "</s>"


def test_glm_start_tokens_are_used_when_the_tokenizer_has_them():
    t = tiny_tokenizer(all_texts())
    t.add_special_tokens({"additional_special_tokens": ["[gMASK]", "sop"]})
    ids = chat.render_prompt(t, "glm", SYSTEM, QUESTION)
    assert ids[:2] == t.convert_tokens_to_ids(["[gMASK]", "sop"])


def test_chat_template_prompt_matches_transformers_apply_chat_template():
    t = template_tok(CHATML)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    expected = t.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert chat.render_prompt(t, "llama", SYSTEM, QUESTION) == list(expected)
    ids, mask = chat.render_example(t, "llama", SYSTEM, QUESTION, ANSWER)
    assert ids[: mask.index(1)] == list(expected)
    # "</s>" is not emitted by this template, so it is appended and learned.
    assert t.decode([i for i, m in zip(ids, mask) if m]) == ANSWER + "<|im_end|>\n</s>"


def test_chat_template_that_ends_turns_with_eos_gets_no_second_eos():
    t = template_tok(CHATML, eos="<|im_end|>")
    ids, mask = chat.render_example(t, "llama", SYSTEM, QUESTION, ANSWER)
    answer = [i for i, m in zip(ids, mask) if m]
    assert t.decode(answer) == ANSWER + "<|im_end|>"  # the newline after the turn's EOS is not learned
    assert ids[-1] == t.eos_token_id
    assert answer.count(t.eos_token_id) == 1


def test_template_without_system_turn_puts_system_on_top_of_the_question():
    t = template_tok(NO_SYSTEM)
    ids, mask = chat.render_example(t, "llama", SYSTEM, QUESTION, ANSWER)
    assert (
        t.decode(ids[: mask.index(1)]) == f"<|im_start|>user\n{SYSTEM}\n\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_template_that_rewrites_the_prompt_is_refused():
    rewriting = "{% if messages[-1]['role'] == 'assistant' %}TRAIN {% endif %}" + CHATML
    with pytest.raises(chat.ChatFormatError, match="answer span"):
        chat.render_example(template_tok(rewriting), "llama", SYSTEM, QUESTION, ANSWER)


def test_batched_rendering_equals_one_by_one(tok):
    systems, questions, answers = [SYSTEM, "你是剑客。"], [QUESTION, "剑叫什么？"], [ANSWER, "寒霜。"]
    batched = chat.render_examples(tok, "glm", systems, questions, answers)
    assert batched == [chat.render_example(tok, "glm", *x) for x in zip(systems, questions, answers)]


def test_bad_family_and_missing_eos_are_errors(tok):
    with pytest.raises(chat.ChatFormatError, match="family='gpt'"):
        chat.render_example(tok, "gpt", SYSTEM, QUESTION, ANSWER)
    t = tiny_tokenizer(all_texts())
    t.eos_token = None
    with pytest.raises(chat.ChatFormatError, match="no eos_token"):
        chat.render_example(t, "llama", SYSTEM, QUESTION, ANSWER)


LLAMA3_LIKE = (  # BOS written by the template itself, end-of-turn token distinct from EOS
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_template_that_writes_bos_gets_exactly_one():
    t = tiny_tokenizer(all_texts())
    t.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    t.chat_template = LLAMA3_LIKE
    ids, mask = chat.render_example(t, "llama", SYSTEM, QUESTION, ANSWER)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    expected = t.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids[: mask.index(1)] == list(expected) and ids.count(t.bos_token_id) == 1 and ids[0] == t.bos_token_id
    assert t.decode([i for i, m in zip(ids, mask) if m]) == ANSWER + "<|eot_id|></s>"


@pytest.mark.parametrize(
    "family,start_tokens",
    [
        ("llama", None),
        ("glm", None),
        ("glm", ["[gMASK]", "sop"]),
        ("glm4", ["[gMASK]", "<sop>"]),
        ("qwen3", None),
        ("mistral", None),
    ],
)
def test_export_template_makes_transformers_prompt_as_training_did(tmp_path, family, start_tokens):
    t = tiny_tokenizer(all_texts())
    if start_tokens:
        t.add_special_tokens({"additional_special_tokens": start_tokens})
    trained = [chat.render_example(t, family, SYSTEM, q, ANSWER) for q in (QUESTION, "你是谁？")]
    template = chat_export.export_chat_template(t, family)
    assert template is not None and t.chat_template is None  # the probe leaves the tokenizer as it was
    t.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(template, encoding="utf-8")  # as the export writes it
    exported = type(t).from_pretrained(tmp_path)
    assert exported.chat_template == template
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    ids = exported.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(ids) == trained[0][0][: trained[0][1].index(1)]  # transformers' prompt == training's prompt ids
    # and our own rendering through the template (a run started from the export) is unchanged too
    assert [chat.render_example(exported, family, SYSTEM, q, ANSWER) for q in (QUESTION, "你是谁？")] == trained
    # multi-turn too (a model trained on data.conversations): transformers' ids are the training row's,
    # and serving's prompt of a later turn
    conversation = [*messages, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": "你好?"}]
    conversation.append({"role": "assistant", "content": "Snow."})
    row = chat.render_conversation(t, family, conversation)
    assert list(exported.apply_chat_template(conversation, tokenize=True, return_dict=False)) == row[0]
    assert chat.render_conversation(exported, family, conversation) == row  # and the same loss mask
    later = exported.apply_chat_template(
        conversation[1:4], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert list(later) == chat.render_chat_prompt(t, family, conversation[1:4])
    with pytest.raises(Exception, match="take turns"):
        exported.apply_chat_template([messages[1], messages[1]])


def test_export_template_keeps_a_tokenizers_own():
    assert chat_export.export_chat_template(template_tok(CHATML), "llama") is None


# ---------------------------------------------------------------- multi-turn rendering
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": ANSWER},
    {"role": "user", "content": "And snow?"},
]


@pytest.mark.parametrize("family", ["llama", "glm"])
def test_chat_prompt_of_one_turn_is_the_training_prompt(tok, family):
    assert chat.render_chat_prompt(tok, family, CONVERSATION[:2]) == chat.render_prompt(tok, family, SYSTEM, QUESTION)


def test_chat_prompt_default_format_lays_turns_end_to_end(tok):
    ids = chat.render_chat_prompt(tok, "llama", CONVERSATION)
    first, _ = chat.render_example(tok, "llama", SYSTEM, QUESTION, ANSWER)  # the training row, EOS included
    assert ids == first + [tok.bos_token_id] + encode(tok, "[INST] And snow? [/INST]")
    glm = chat.render_chat_prompt(tok, "glm", CONVERSATION[1:2])
    assert tok.decode(glm, skip_special_tokens=True) == "[Round 1]\n\n问：What is rain?\n\n答："


@pytest.mark.parametrize("template", [CHATML, NO_SYSTEM])
def test_chat_prompt_through_the_template_is_transformers(template):
    t = template_tok(template)
    ids = chat.render_chat_prompt(t, "llama", CONVERSATION)
    if template is NO_SYSTEM:  # the system text opens the first user message, as in training
        merged = [{"role": "user", "content": f"{SYSTEM}\n\n{QUESTION}"}, *CONVERSATION[2:]]
        expected = t.apply_chat_template(merged, add_generation_prompt=True, tokenize=True, return_dict=False)
    else:
        expected = t.apply_chat_template(CONVERSATION, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ids == list(expected)
    assert chat.render_chat_prompt(t, "llama", CONVERSATION[:2]) == chat.render_prompt(t, "llama", SYSTEM, QUESTION)


@pytest.mark.parametrize(
    "messages,match",
    [
        ([{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}], r"messages\[1\].role='user'"),
        ([{"role": "bot", "content": "hi"}], r"messages\[0\].role='bot'"),
        ([{"role": "user", "content": 3}], r"messages\[0\].content"),
        (CONVERSATION[:3], "last message must be the user's"),
        ([], "last message must be the user's"),
    ],
)
def test_bad_conversations_name_the_message(tok, messages, match):
    with pytest.raises(chat.ChatFormatError, match=match):
        chat.render_chat_prompt(tok, "llama", messages)


@pytest.mark.parametrize(
    "family,prompt",
    [
        (
            "qwen2",
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            "qwen3",
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n",
        ),
        ("mistral", f"[INST] {SYSTEM}\n\n{QUESTION} [/INST]"),
    ],
)
def test_new_family_default_formats_mask_only_the_answer_and_eos(tok, family, prompt):
    ids, mask = chat.render_example(tok, family, SYSTEM, QUESTION, ANSWER)
    answer_ids = encode(tok, ANSWER)
    assert ids == [tok.bos_token_id] + encode(tok, prompt) + answer_ids + [tok.eos_token_id]
    assert mask == [0] * (len(ids) - len(answer_ids) - 1) + [1] * (len(answer_ids) + 1)
    assert chat.render_prompt(tok, family, SYSTEM, QUESTION) == ids[: mask.index(1)]


def test_every_model_family_has_a_default_chat_format():
    from rolellm_jax.models.config import FAMILIES

    assert chat.FAMILIES == FAMILIES


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "mistral", "glm4"])
def test_new_family_default_formats_render_later_turns_after_the_training_row(tok, family):
    ids = chat.render_chat_prompt(tok, family, CONVERSATION)
    first, _ = chat.render_example(tok, family, SYSTEM, QUESTION, ANSWER)  # the training row, EOS included
    assert ids[: len(first)] == first
    later = tok.decode(ids[len(first) :])
    assert "And snow?" in later and SYSTEM not in later  # the next turn, without the system text again
