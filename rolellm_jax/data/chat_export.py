"""The ``chat_template`` an export ships when training used a family's default chat format (the
base tokenizer had none), so transformers' ``apply_chat_template`` renders what training did.

The template lays turns out as chat_format does (``render_chat_prompt`` / ``render_conversation``):
the format's ``prompt`` for a first turn with a system message, its ``turn`` otherwise, each answer
as ``answer`` + EOS, every turn opening with the format's start tokens.
"""

from __future__ import annotations

import json

from rolellm_jax.data.chat_format import (
    chat_format,
    has_chat_template,
    render_chat_prompt,
    render_conversation,
    render_example,
    render_prompt,
    start_ids,
)

PROBE = ("You are a probe role.\n你好", "Question 1?", "Answer, with a comma.")  # system, question, answer
PROBE_CONVERSATION = [
    {"role": "system", "content": PROBE[0]},
    {"role": "user", "content": PROBE[1]},
    {"role": "assistant", "content": PROBE[2]},
    {"role": "user", "content": "Question 2, 第二?"},
    {"role": "assistant", "content": "Answer 2."},
]


def export_chat_template(tokenizer, family: str) -> str | None:
    """A Jinja ``chat_template`` for a checkpoint trained with the family's default format; the
    format's start tokens are this tokenizer's (``start_ids``).

    None when the tokenizer has a template of its own (it is kept) or when rendering through the
    new template would not give the very ids (and loss masks) of the default format (checked on a
    single-turn and a multi-turn probe: start tokens that are not special tokens would be split when
    read back from text).
    """
    if has_chat_template(tokenizer):
        return None
    fmt = chat_format(family)
    head, rest = fmt["prompt"].split("{system}")
    middle, tail = rest.split("{question}")
    turn_head, turn_tail = fmt["turn"].split("{question}")
    round_before, _, round_after = turn_head.partition("{round}")  # ChatGLM2's [Round N]
    round_text = " + (loop.index0 // 2 + 1)|string + " + _lit(round_after) if "{round}" in turn_head else ""
    before_answer, after_answer = fmt["answer"].split("{answer}")
    start = "".join(tokenizer.convert_ids_to_tokens(start_ids(tokenizer, family)))
    template = (
        "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
        "{%- set turns = messages[1:] -%}{%- else -%}{%- set system = none -%}{%- set turns = messages -%}{%- endif -%}"
        "{%- for m in turns -%}"
        "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
        "{{ raise_exception('after an optional system message, user and assistant messages take turns') }}"
        "{%- elif m['role'] == 'assistant' -%}"
        f"{{{{ {_lit(before_answer)} + m['content'] + {_lit(after_answer)} + eos_token }}}}"
        "{%- elif loop.first and system is not none -%}"
        f"{{{{ {_lit(start + head)} + system + {_lit(middle)} + m['content'] + {_lit(tail)} }}}}"
        "{%- else -%}"
        f"{{{{ {_lit(start + round_before)}{round_text} + m['content'] + {_lit(turn_tail)} }}}}"
        "{%- endif -%}{%- endfor -%}"
    )
    if _renders_as_default(tokenizer, family, template):
        return template
    return None


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a Jinja string literal


def _renders_as_default(tokenizer, family: str, template: str) -> bool:
    def probes():
        return (
            render_example(tokenizer, family, *PROBE),
            render_prompt(tokenizer, family, *PROBE[:2]),
            render_conversation(tokenizer, family, PROBE_CONVERSATION),
            render_chat_prompt(tokenizer, family, PROBE_CONVERSATION[1:4]),  # no system: the turn format
        )

    default = probes()
    tokenizer.chat_template = template
    try:
        return probes() == default
    except Exception:  # noqa: BLE001 - any failure to render through the template means: not the same ids
        return False
    finally:
        tokenizer.chat_template = None
