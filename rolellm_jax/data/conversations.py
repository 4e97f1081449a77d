"""Multi-turn training rows (``data.conversations``): a JSONL file, one conversation a line, either
OpenAI's ``{"messages": [{"role", "content"}, ...]}`` or ShareGPT's ``{"conversations": [{"from",
"value"}, ...]}`` (``human`` / ``gpt`` / ``system``), each [system,] user, assistant, ..., assistant.

Read with data_gen.files' JSONL reader, so a bad line is ``file:line: <field>: <reason>`` (or
skipped and counted under ``data.on_bad_line=skip``). Character cards (``data.cards``) give their
example dialogues as conversations too. Rendering, with the loss on every assistant turn, is
chat_format.render_conversation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from data_gen.files import iter_jsonl
from data_gen.pipeline.cards import read_cards
from rolellm_jax.data.chat_format import check_messages, role_system_text

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclasses.dataclass(frozen=True)
class Conversation:
    """One multi-turn training row; ``source`` is its ``file:line``."""

    messages: tuple[dict[str, str], ...]
    source: str = ""

    @property
    def texts(self) -> tuple[str, ...]:
        """Every message's text (what a tokenizer trained on this data must cover)."""
        return tuple(m["content"] for m in self.messages)


def parse_conversation(obj: dict[str, Any]) -> tuple[dict[str, str], ...]:
    """The checked messages of one JSONL object; a ``ValueError`` naming the field otherwise."""
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list):
            raise ValueError(f"messages: expected a list of {{role, content}} objects, got {type(messages).__name__}")
        check_messages(messages, answered=True)
        return tuple({"role": m["role"], "content": m["content"]} for m in messages)
    if "conversations" in obj:
        return _from_sharegpt(obj["conversations"])
    raise ValueError("expected a 'messages' list (OpenAI) or a 'conversations' list (ShareGPT)")


def _from_sharegpt(turns: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(turns, list):
        raise ValueError(f"conversations: expected a list of {{from, value}} objects, got {type(turns).__name__}")
    messages = []
    for i, turn in enumerate(turns):
        speaker = turn.get("from") if isinstance(turn, dict) else turn
        if speaker not in SHAREGPT_ROLES:
            raise ValueError(f"conversations[{i}].from={speaker!r}: expected one of {tuple(SHAREGPT_ROLES)}")
        if not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{i}].value: must be a string")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn["value"]})
    try:
        check_messages(messages, answered=True)
    except ValueError as err:  # same positions, in ShareGPT's list (roles as they map: human -> user, gpt -> assistant)
        raise ValueError(str(err).replace("messages", "conversations")) from None
    return tuple(messages)


def read_conversations(path: str | Path, on_bad_line: str = "fail") -> list[Conversation]:
    """Every conversation of ``path`` (a JSONL file), each knowing its ``file:line``."""
    return [Conversation(m, f"{path}:{n}") for n, m in iter_jsonl(path, on_bad_line, parse_conversation)]


def card_conversations(folder: str | Path) -> list[Conversation]:
    """The example dialogues (``mes_example``) of every character card in ``folder`` (read by
    data_gen/pipeline/cards.py) as conversations: the card's role system instruction (as serving the
    card builds it), the user's lines as user turns, the character's as assistant turns. Lines of one
    speaker in a row make one turn; a dialogue is cut to open with the user and end with the
    character, and one left without such an exchange gives no row."""
    out = []
    for card in read_cards(folder):
        system = {"role": "system", "content": role_system_text(card.lang, card.name, card.description)}
        for n, block in enumerate(card.dialogues):
            turns: list[dict[str, str]] = []
            for speaker, text in block:
                role = "assistant" if speaker == card.name else "user"
                if turns and turns[-1]["role"] == role:
                    turns[-1]["content"] += "\n" + text
                else:
                    turns.append({"role": role, "content": text})
            while turns and turns[0]["role"] == "assistant":
                turns.pop(0)
            while turns and turns[-1]["role"] == "user":
                turns.pop()
            if turns:
                out.append(Conversation((system, *turns), f"{card.source}: mes_example dialogue {n + 1}"))
    return out
