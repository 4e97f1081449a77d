"""Character cards (the role-play community's character files) read as roles.

Accepted: Character Card V3 (``spec: chara_card_v3``) and V2 (``chara_card_v2``) JSON, V1 (the
same fields at the top level), and any of them embedded in a PNG ``tEXt`` chunk (``ccv3``
preferred over ``chara``) as base64 JSON, read with Pillow. A card becomes:

- ``description``: its ``description``, ``personality`` and ``scenario``, blank-line separated;
- ``greeting``: ``first_mes``;
- ``dialogues``: ``mes_example`` split on ``<START>``, each block a list of (speaker, text) turns
  (a line ``NAME: text`` starts a turn, other lines continue it).

``{{char}}`` / ``<BOT>`` become the card's name and ``{{user}}`` / ``<USER>`` the user's, in every
field. The language is ``zh`` when most letters of the description are CJK, else ``eng``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path

from data_gen.errors import UserError
from data_gen.rolebench import chinese_share

SPECS = ("chara_card_v3", "chara_card_v2")
PNG_KEYS = ("ccv3", "chara")  # V3 first: a V3 card often carries a V2 copy for older readers
_START = re.compile(r"<START>", re.IGNORECASE)


class CardError(UserError):
    """A card file that cannot be read as a character (the message names the file and field)."""


@dataclass(frozen=True)
class Card:
    name: str
    description: str
    greeting: str
    dialogues: tuple[tuple[tuple[str, str], ...], ...]
    lang: str
    source: str


def read_card(path: str | Path, user: str = "User") -> Card:
    path = Path(path)
    data = _png_card(path) if path.suffix.lower() == ".png" else _json_file(path)
    return card_from_json(data, str(path), user)


def read_cards(folder: str | Path, user: str = "User") -> list[Card]:
    """Every ``*.json`` / ``*.png`` card in ``folder`` (sorted by file name); names must be unique."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CardError(f"{folder}: no such folder of character cards")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".png"))
    if not paths:
        raise CardError(f"{folder}: no .json or .png character card in this folder")
    cards, seen = [], {}
    for p in paths:
        card = read_card(p, user)
        if card.name in seen:
            raise CardError(f"{p}: character {card.name!r} is also in {seen[card.name]}")
        seen[card.name] = p
        cards.append(card)
    return cards


def card_from_json(data: object, source: str, user: str = "User") -> Card:
    if not isinstance(data, dict):
        raise CardError(f"{source}: a character card is a JSON object")
    spec = data.get("spec")
    if spec is not None and spec not in SPECS:
        raise CardError(f"{source}: spec={spec!r}: expected one of {SPECS} (or a V1 card without 'spec')")
    fields = data.get("data") if spec is not None else data
    if not isinstance(fields, dict):
        raise CardError(f"{source}: 'data' must be an object")

    def text(key: str, required: bool = False) -> str:
        value = fields.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise CardError(f"{source}: data.{key} must be a string")
        if required and not value.strip():
            raise CardError(f"{source}: data.{key} is missing or empty")
        return value

    name = text("name", required=True).strip()
    sub = lambda s: _substitute(s, name, user).strip()
    description = "\n\n".join(x for x in (sub(text(k)) for k in ("description", "personality", "scenario")) if x)
    if not description:
        raise CardError(f"{source}: data.description, personality and scenario are all empty")
    dialogues = tuple(d for d in (_turns(sub(block), name, user) for block in _START.split(text("mes_example"))) if d)
    lang = "zh" if (chinese_share(description) or 0.0) > 0.5 else "eng"
    return Card(name, description, sub(text("first_mes")), dialogues, lang, source)


def _substitute(text: str, char: str, user: str) -> str:
    for pattern, value in ((r"\{\{char\}\}|<BOT>", char), (r"\{\{user\}\}|<USER>", user)):
        text = re.sub(pattern, lambda _m, v=value: v, text, flags=re.IGNORECASE)
    return text


def _turns(block: str, char: str, user: str) -> tuple[tuple[str, str], ...]:
    turns: list[list[str]] = []
    starts = tuple(f"{who}:" for who in (char, user))
    for line in block.splitlines():
        speaker = next((s[:-1] for s in starts if line.startswith(s)), None)
        if speaker is not None:
            turns.append([speaker, line[len(speaker) + 1 :].strip()])
        elif turns and line.strip():
            turns[-1][1] = f"{turns[-1][1]}\n{line.strip()}".strip()
    return tuple((s, t) for s, t in turns if t)


def _json_file(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CardError(f"{path}: cannot read ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise CardError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise CardError(f"{path}: not UTF-8 text") from None


def _png_card(path: Path) -> object:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            chunks = dict(getattr(image, "text", {}))
    except (OSError, UnidentifiedImageError) as err:
        raise CardError(f"{path}: not a readable PNG ({err})") from None
    key = next((k for k in PNG_KEYS if k in chunks), None)
    if key is None:
        raise CardError(f"{path}: no character card in this PNG (no tEXt chunk {' or '.join(PNG_KEYS)})")
    try:
        return json.loads(base64.b64decode(chunks[key], validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CardError(f"{path}: tEXt chunk {key!r} is not base64 JSON ({err})") from None


def card_profile_rows(card: Card) -> list[dict]:
    """RoleBench profile rows of a card: each example dialogue an act (act_id), its turns diag_id;
    a card without examples gets its greeting as its one line."""
    blocks = card.dialogues or (((card.name, card.greeting),) if card.greeting.strip() else ())
    rows = [
        {"act_id": act, "diag_id": turn, "role": speaker, "content": text}
        for act, block in enumerate(blocks)
        for turn, (speaker, text) in enumerate(block)
    ]
    if not any(r["role"] == card.name for r in rows):
        raise CardError(
            f"{card.source}: {card.name!r} says nothing in mes_example or first_mes (a profile needs lines)"
        )
    return rows
