"""Chat rendering: the one place that turns (system, question[, answer]) and whole conversations
into token ids.

Training (``render_examples``; multi-turn rows: ``render_conversation``) and generation
(``render_prompts``; serving and the REPL: ``render_chat_prompt``) all come through here, so
the model is trained on exactly the ids it is later prompted with.

* With a tokenizer ``chat_template``: ``apply_chat_template`` renders
  ``[system, user]`` with ``add_generation_prompt=True`` (the prompt) and
  ``[system, user, assistant]`` (the full text). The full text must start with the prompt; the
  rest is the answer span (the answer plus the template's end-of-turn). A template that rejects
  a system message gets the system text at the top of the user message instead.
* Without one: the family's default format in ``rolellm_jax/data/prompts/chat_<format>.json``
  (llama: Llama-2-chat ``[INST] <<SYS>>``; glm: ChatGLM2 ``[Round 1]\\n\\n问：...\\n\\n答：``;
  glm4: ``[gMASK]<sop><|system|>...``; qwen2 / qwen3: ChatML; mistral: ``[INST] system\\n\\nquestion [/INST]``;
  gemma2 / gemma3: ``<start_of_turn>user\\nsystem\\n\\nquestion<end_of_turn>\\n<start_of_turn>model\\n``),
  with BOS (or the format's start tokens) in front and EOS after the answer.

Prompt and answer are tokenised separately and concatenated: the answer's first token never
merges with the prompt's last one, so training sees the same prompt ids as generation.
The loss mask is 1 on the answer ids, EOS included (the model must learn to stop), 0 elsewhere; with a
template that ends the turn with EOS, text after that EOS (ChatML's newline) is left out.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Sequence
from typing import Any

from data_gen.rolebench import RoleBenchError, short_lang
from rolellm_jax.errors import UserError

# family -> its default format, data/prompts/chat_<format>.json (used without a chat_template)
DEFAULT_FORMATS = {
    "llama": "llama",
    "glm": "glm",
    "glm4": "glm4",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "mistral": "mistral",
    "gemma2": "gemma",
    "gemma3": "gemma",
}
FAMILIES = tuple(DEFAULT_FORMATS)


class ChatFormatError(UserError, ValueError):
    """A tokenizer / format that cannot render a training example (the message says why)."""


@functools.cache
def role_system_template(lang: str) -> str:
    """``data_gen/prompts/role_system_{en,zh}.txt``: the paper's role system instruction."""
    try:
        name = f"role_system_{short_lang(lang)}.txt"
    except RoleBenchError as err:
        raise ChatFormatError(str(err)) from None
    return importlib.resources.files("data_gen.prompts").joinpath(name).read_text(encoding="utf-8").strip()


def role_system_text(lang: str, role: str, description: str) -> str:
    """The system instruction naming ``role`` with its description and catchphrases."""
    return role_system_template(lang).format(role=role, description=description)


@functools.cache
def chat_format(family: str) -> dict[str, Any]:
    """The default chat format of ``family`` (used when the tokenizer has no chat_template)."""
    if family not in FAMILIES:
        raise ChatFormatError(f"family={family!r}: expected one of {FAMILIES}")
    text = (
        importlib.resources.files("rolellm_jax.data.prompts")
        .joinpath(f"chat_{DEFAULT_FORMATS[family]}.json")
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def render_texts(
    tokenizer, family: str, system: str, question: str, answer: str | None = None
) -> tuple[str, str | None]:
    """``(prompt_text, answer_text)``: the text before and after the answer boundary.

    Default formats leave the start tokens and EOS out of these texts (added as ids).
    """
    if has_chat_template(tokenizer):
        return _template_texts(tokenizer, system, question, answer)
    fmt = chat_format(family)
    prompt = fmt["prompt"].format(system=system, question=question)
    return prompt, None if answer is None else fmt["answer"].format(answer=answer)


def render_prompts(tokenizer, family: str, systems: Sequence[str], questions: Sequence[str]) -> list[list[int]]:
    """Prompt ids (ending where the answer starts) for a batch of examples."""
    prompts = [render_texts(tokenizer, family, s, q)[0] for s, q in zip(systems, questions, strict=True)]
    start = [] if has_chat_template(tokenizer) else start_ids(tokenizer, family)
    return [start + ids for ids in _encode(tokenizer, prompts)]


def render_examples(
    tokenizer, family: str, systems: Sequence[str], questions: Sequence[str], answers: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """``(ids, loss_mask)`` for a batch of examples; tokenised in two batched calls."""
    texts = [render_texts(tokenizer, family, s, q, a) for s, q, a in zip(systems, questions, answers, strict=True)]
    if has_chat_template(tokenizer):
        texts = [(p, _through_end_of_turn(a, tokenizer.eos_token)) for p, a in texts]
    # A RoleBench row gives one example per reference answer: encode each distinct prompt once.
    unique_prompts = list(dict.fromkeys(p for p, _ in texts))
    encoded = dict(zip(unique_prompts, _encode(tokenizer, unique_prompts)))
    prompt_ids = [encoded[p] for p, _ in texts]
    answer_ids = _encode(tokenizer, [a for _, a in texts])
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ChatFormatError("tokenizer has no eos_token: an answer must end with EOS so the model learns to stop")
    templated = has_chat_template(tokenizer)
    start = [] if templated else start_ids(tokenizer, family)
    out = []
    for (_, answer_text), p_ids, a_ids in zip(texts, prompt_ids, answer_ids, strict=True):
        # A template ends the turn its own way; it gets EOS only if it does not emit it itself.
        if not templated or tokenizer.eos_token not in answer_text:
            a_ids = a_ids + [eos]
        ids = start + p_ids + a_ids
        out.append((ids, [0] * (len(start) + len(p_ids)) + [1] * len(a_ids)))
    return out


def render_prompt(tokenizer, family: str, system: str, question: str) -> list[int]:
    """Prompt ids of one example."""
    return render_prompts(tokenizer, family, [system], [question])[0]


def render_example(tokenizer, family: str, system: str, question: str, answer: str) -> tuple[list[int], list[int]]:
    """``(ids, loss_mask)`` of one example."""
    return render_examples(tokenizer, family, [system], [question], [answer])[0]


def _template_texts(tokenizer, system: str, question: str, answer: str | None) -> tuple[str, str | None]:
    from jinja2.exceptions import TemplateError

    try:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:  # e.g. templates that allow no system turn: put it on top of the question
        messages = [{"role": "user", "content": f"{system}\n\n{question}"}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if answer is None:
        return prompt, None
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt) or answer not in full[len(prompt) :]:
        raise ChatFormatError(
            "tokenizer chat_template: the rendering with the answer does not extend the generation prompt, "
            "so the answer span cannot be found (a template that rewrites earlier turns?)"
        )
    return prompt, full[len(prompt) :]


def _through_end_of_turn(answer_text: str, eos_token: str | None) -> str:
    """The answer span up to and including the template's EOS: what follows it (ChatML's newline
    between turns) separates turns and is not the assistant's to learn."""
    if eos_token and eos_token in answer_text:
        return answer_text[: answer_text.rindex(eos_token) + len(eos_token)]
    return answer_text


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    # Special tokens written in the text (template markers) are parsed; none are added.
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def start_ids(tokenizer, family: str) -> list[int]:
    """The format's start tokens when the tokenizer has them all, else BOS, else nothing."""
    wanted = chat_format(family)["start_tokens"]
    if wanted:
        ids = tokenizer.convert_tokens_to_ids(wanted)
        if all(i is not None and i != tokenizer.unk_token_id for i in ids):
            return list(ids)
    return [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]


# ---------------------------------------------------------------- multi-turn (serving, the REPL, training)
CHAT_ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[dict[str, str]], answered: bool = False) -> None:
    """[system,] user, assistant, user, ..., user (``answered``: ..., assistant): refused otherwise,
    naming the message."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES:
            got = m.get("role") if isinstance(m, dict) else m
            raise ChatFormatError(f"messages[{i}].role={got!r}: expected one of {CHAT_ROLES}")
        if not isinstance(m.get("content"), str):
            raise ChatFormatError(f"messages[{i}].content: must be a string")
    offset = 1 if messages and messages[0]["role"] == "system" else 0
    turns = messages[offset:]
    for j, m in enumerate(turns):
        want = "user" if j % 2 == 0 else "assistant"
        if m["role"] != want:
            raise ChatFormatError(
                f"messages[{offset + j}].role={m['role']!r}: expected {want!r} "
                "(an optional system message first, then user and assistant turns in turn)"
            )
    last = "assistant" if answered else "user"
    if not turns or turns[-1]["role"] != last:
        why = "a training conversation ends with an answer" if answered else "the model answers it"
        raise ChatFormatError(f"messages: the last message must be the {last}'s ({why})")


def render_chat_prompt(tokenizer, family: str, messages: Sequence[dict[str, str]]) -> list[int]:
    """Prompt ids of a conversation ([system,] user, assistant, ..., user), ending where the next
    answer starts. ``[system, user]`` gives exactly ``render_prompt``'s ids (training's rendering).

    With a chat_template: ``apply_chat_template`` (a template that rejects a system message gets it
    on top of the first user message, as in training). Without: the family's default format, its
    ``prompt`` for a first turn with a system message, its ``turn`` otherwise; each earlier answer
    as in training (``answer`` + EOS), the next turn opening with the start tokens again.
    """
    check_messages(messages)
    if has_chat_template(tokenizer):
        return _encode(tokenizer, [_template_chat_text(tokenizer, list(messages))])[0]
    return [i for piece, _ in _default_pieces(tokenizer, family, messages) for i in piece]


def render_conversation(tokenizer, family: str, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[int]]:
    """``(ids, loss_mask)`` of a whole training conversation ([system,] user, assistant, ...,
    assistant): the mask is 1 on every assistant turn's content and its end-of-turn, 0 elsewhere.

    Without a chat_template: the pieces of ``render_chat_prompt`` (so the prompt of turn k is a token
    prefix of the row and serving sees the ids training did) with each answer + EOS masked; one
    answered turn is exactly ``render_example``.

    With a chat_template the conversation is rendered once and tokenised once, so the ids are
    exactly ``apply_chat_template(messages)``'s. Encoding turn by turn would not be: a template's
    text tokenised in pieces can split differently at the seams than the whole text does (and
    transformers, vLLM or our server tokenise the whole text). The assistant spans are found by
    rendering prefixes: the generation prompt of messages[:k] and the text of messages[:k+1] must
    both be text prefixes of the whole (a template that rewrites earlier turns is refused); the span
    between them, through the EOS when the template writes it (ChatML's newline after it is not
    learnt), is mapped to tokens by the tokenizer's offsets. A token across a span's edge is an
    error naming the message. No EOS is appended: the template's own end-of-turn is learnt.
    """
    check_messages(messages, answered=True)
    if not has_chat_template(tokenizer):
        pieces = _default_pieces(tokenizer, family, messages)
        return [i for p, _ in pieces for i in p], [int(answer) for p, answer in pieces for _ in p]
    messages = _template_messages(tokenizer, list(messages))
    render = functools.partial(_apply_template, tokenizer)
    full = render(messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            head, through = render(messages[:k], True), render(messages[: k + 1], False)
            if not (
                full.startswith(through) and through.startswith(head) and m["content"].strip() in through[len(head) :]
            ):
                raise ChatFormatError(
                    f"messages[{k}]: the tokenizer's chat_template renders the conversation so that this answer's "
                    "span cannot be found (a template that rewrites earlier turns?)"
                )
            spans.append(
                (k, len(head), len(head) + len(_through_end_of_turn(through[len(head) :], tokenizer.eos_token)))
            )
    if not getattr(tokenizer, "is_fast", False):
        raise ChatFormatError(f"{type(tokenizer).__name__}: multi-turn training needs a fast tokenizer (its offsets)")
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    mask = [0] * len(ids)
    for k, begin, end in spans:
        for t, (s, e) in enumerate(offsets):
            if s < begin < e or s < end < e:
                raise ChatFormatError(
                    f"messages[{k}]: token {t} ({tokenizer.convert_ids_to_tokens(ids[t])!r}) crosses the edge of "
                    "the assistant turn, so its loss mask is ambiguous"
                )
            if begin <= s < end:
                mask[t] = 1
    return ids, mask


def _default_pieces(tokenizer, family: str, messages: Sequence[dict[str, str]]) -> list[tuple[list[int], bool]]:
    """``(ids, is_answer)`` pieces of a conversation in the family's default format, in order."""
    fmt = chat_format(family)
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = messages[1:] if system is not None else messages
    if "turn" not in fmt and (system is None or len(turns) > 2):
        raise ChatFormatError(f"family={family!r}: its default chat format is single-turn with a system message")
    if tokenizer.eos_token_id is None:
        raise ChatFormatError("tokenizer has no eos_token: an answer must end with EOS so the model learns to stop")
    start = start_ids(tokenizer, family)
    pieces = []
    for n, i in enumerate(range(0, len(turns), 2), start=1):
        question = turns[i]["content"]
        if n == 1 and system is not None:
            text = fmt["prompt"].format(system=system, question=question)
        else:
            text = fmt["turn"].format(question=question, round=n)
        pieces.append((start + _encode(tokenizer, [text])[0], False))
        if i + 1 < len(turns):
            answer = _encode(tokenizer, [fmt["answer"].format(answer=turns[i + 1]["content"])])[0]
            pieces.append((answer + [tokenizer.eos_token_id], True))
    return pieces


def _apply_template(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _template_messages(tokenizer, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages``, or, for a template that rejects a system message, the system text put on top
    of the first user message (as training's single-turn rendering does)."""
    from jinja2.exceptions import TemplateError

    try:
        _apply_template(tokenizer, messages, messages[-1]["role"] != "assistant")
        return messages
    except TemplateError:
        if messages[0]["role"] != "system":
            raise
        system, first, *rest = messages
        return [{"role": "user", "content": f"{system['content']}\n\n{first['content']}"}, *rest]


def _template_chat_text(tokenizer, messages: list[dict[str, str]]) -> str:
    return _apply_template(tokenizer, _template_messages(tokenizer, messages), True)
