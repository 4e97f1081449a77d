"""The RoleBench schema, owned here for the whole project: the names of languages, settings,
kinds and splits; the original layout's folders and the release's config names; the row type and
the normalisation of the published files' quirks.

The published files have quirks normalised by :func:`parse_row`: ``type`` is a string in train
files and a list aligned with ``generated`` in test files (always a tuple aligned with the answers
here); English role-specific questions and answers begin with a space (stripped);
``rolegpt_baseline.jsonl`` rows carry no ``type``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from data_gen.errors import UserError

LANGS = ("eng", "zh")
SETTINGS = ("instruction_generalization", "role_generalization")
KINDS = ("general", "role_specific")
SPLITS = ("train", "test", "rolegpt_baseline")  # what training and evaluation read
# raw: the instruction datasets' original answers for general test rows (data_gen shard sets), for RAW scoring
RELEASE_SPLITS = ("train", "test", "rolegpt_baseline", "raw")
EVAL_SPLITS = ("test", "rolegpt_baseline", "raw")  # rows about held-out questions: never in train
# The 10 English roles the paper holds out for role generalisation; used only when the
# source has no role-generalisation test split to read them from.
PAPER_HELD_OUT_ROLES = frozenset(
    {
        "Andrew Detmer",
        "Coriolanus",
        "Jack Sparrow",
        "John Doe",
        "John Keating",
        "Lestat de Lioncourt",
        "Professor G.H. Dorr",
        "Raylan Givens",
        "Tom Ripley",
        "Walt Kowalski",
    }
)

# Language names: ``eng`` / ``zh`` are RoleBench's folder tags; ``en`` is accepted everywhere.
LANG_ALIASES = {"eng": "eng", "en": "eng", "english": "eng", "zh": "zh", "chinese": "zh", "cn": "zh"}

# source folder (relative to the source root) -> config name
DIALOG_FOLDERS: dict[str, str] = {
    "rolebench-eng/instruction-generalization/general": "eng-instruction_generalization-general",
    "rolebench-eng/instruction-generalization/role_specific": "eng-instruction_generalization-role_specific",
    "rolebench-eng/role-generalization/general": "eng-role_generalization-general",
    "rolebench-eng/role-generalization/role_specific": "eng-role_generalization-role_specific",
    "rolebench-zh/general": "zh-general",
    "rolebench-zh/role_specific": "zh-role_specific",
}
PROFILE_LANGS = ("eng", "zh")  # profiles-<tag>/ folders


class RoleBenchError(UserError, ValueError):
    """Unusable RoleBench input; the message names the file, line, config or role."""


@dataclasses.dataclass(frozen=True)
class RoleRow:
    """One RoleBench row: a question to a role and its reference answers."""

    role: str
    question: str
    answers: tuple[str, ...]
    kind: str  # general | role_specific
    types: tuple[str, ...] | None  # role_specific: script_agnostic|script_based per answer
    source: str  # "file:line" or "hub-path:config/split[index]", for error messages


def canonical_lang(value: str, flag: str = "lang") -> str:
    """``eng`` or ``zh`` for any accepted spelling (eng, en, english, zh, chinese)."""
    lang = LANG_ALIASES.get(str(value).strip().lower())
    if lang is None:
        raise RoleBenchError(f"{flag}={value!r}: expected one of eng (or en), zh")
    return lang


def lang_flag(value: str) -> str:
    """argparse ``type=`` of every ``--lang`` flag: any accepted spelling -> ``eng`` / ``zh``."""
    import argparse

    try:
        return canonical_lang(value, "--lang")
    except RoleBenchError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


LANG_CHOICES_HELP = "eng (or en) | zh"


def short_lang(value: str) -> str:
    """``en`` or ``zh``: the spelling of prompt files and Rouge tokenisers."""
    return "en" if canonical_lang(value) == "eng" else "zh"


# Chinese ideographs (CJK unified, extension A, compatibility) and any letter, CJK included.
_CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]")


def chinese_share(text: str, prefix: int | None = None) -> float | None:
    """The share of the letters of ``text`` that are Chinese ideographs, None when it has no letter:
    the project's one detector of Chinese text, each caller choosing its thresholds. ``prefix``: look
    at the first that many characters only (a prefix tells the language; keeps large builds fast)."""
    if prefix is not None:
        text = text[:prefix]
    if text.isascii():  # the common English case, decided without a regex
        return 0.0 if any(c.isalpha() for c in text) else None
    letters = len(_LETTER.findall(text))
    return len(_CHINESE.findall(text)) / letters if letters else None


def looks_chinese(text: str, threshold: float = 0.5) -> bool:
    """True when at least ``threshold`` of the letters of ``text`` are Chinese."""
    share = chinese_share(text)
    return share is not None and share >= threshold


def config_name(lang: str, setting: str, kind: str) -> str:
    """The release config name of one (lang, setting, kind)."""
    check_choice("lang", lang, LANGS)
    check_choice("setting", setting, SETTINGS)
    check_choice("kind", kind, KINDS)
    if lang == "zh":
        if setting != "instruction_generalization":
            raise RoleBenchError(f"setting={setting!r}: Chinese RoleBench has only instruction_generalization")
        return f"zh-{kind}"
    return f"eng-{setting}-{kind}"


def original_file(root: str | Path, lang: str, setting: str, kind: str, split: str) -> Path:
    """Path of one split file in the original RoleBench layout."""
    config_name(lang, setting, kind)  # validates the combination
    check_choice("split", split, SPLITS)
    root = Path(root)
    if lang == "zh":
        return root / "rolebench-zh" / kind / f"{split}.jsonl"
    return root / "rolebench-eng" / setting.replace("_", "-") / kind / f"{split}.jsonl"


def is_original_layout(root: str | Path) -> bool:
    root = Path(root)
    return root.is_dir() and any((root / d).is_dir() for d in ("rolebench-eng", "rolebench-zh"))


def row_fields(obj: dict[str, Any], *, allow_no_answer: bool = False) -> tuple[str, str, list[str]]:
    """The checked (role, question, generated) of a RoleBench-format row (ValueError naming the key).

    ``generated`` may be a bare string (wrapped in a list); an empty list is accepted only with
    ``allow_no_answer`` (a prediction file may hold an empty answer, which then scores 0)."""
    role, question, generated = obj.get("role"), obj.get("question"), obj.get("generated")
    if not isinstance(role, str) or not role.strip():
        raise ValueError(f"key 'role': expected a non-empty string, got {role!r}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"key 'question': expected a non-empty string, got {question!r}")
    if isinstance(generated, str):
        generated = [generated]
    if not isinstance(generated, list) or not all(isinstance(a, str) for a in generated):
        raise ValueError(f"key 'generated': expected a list of strings, got {generated!r}")
    if not generated and not allow_no_answer:
        raise ValueError(f"key 'generated': expected a non-empty list of strings, got {generated!r}")
    return role, question, generated


def parse_row(obj: dict[str, Any], kind: str, source: str = "") -> RoleRow:
    """Validate one decoded row and normalise the original quirks (ValueError when unusable)."""
    role, question, generated = row_fields(obj)
    answers = tuple(a.strip() for a in generated)
    if not all(answers):
        raise ValueError("key 'generated': an answer is empty")
    raw_type = obj.get("type")
    types: tuple[str, ...] | None
    if raw_type is None:
        types = None
    elif isinstance(raw_type, str):  # train files: one type for the row
        types = (raw_type,) * len(answers)
    elif isinstance(raw_type, list) and all(isinstance(t, str) for t in raw_type):
        if len(raw_type) != len(answers):  # test files: one type per answer
            raise ValueError(f"key 'type': {len(raw_type)} types for {len(answers)} answers in 'generated'")
        types = tuple(raw_type)
    else:
        raise ValueError(f"key 'type': expected a string or a list of strings, got {raw_type!r}")
    return RoleRow(role.strip(), question.strip(), answers, kind, types, source)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RoleBenchError(f"{name}={value!r}: expected one of {choices}")
