"""RoleBench rows for training and evaluation, from the original layout or our release.

Two sources give the same :class:`RoleRow` objects:

* a folder in the ORIGINAL RoleBench layout (``rolebench-eng/instruction-generalization/
  {general,role_specific}/{train,test}.jsonl``, ``rolebench-eng/role-generalization/...``,
  ``rolebench-zh/{general,role_specific}/...``, ``profiles-{eng,zh}/desc.json``). Its quirks are
  normalised here: ``type`` is a string in train files and a list aligned with ``generated`` in
  test files (always a tuple aligned with the answers here); English role-specific questions and
  answers begin with a space (stripped). ``rolegpt_baseline.jsonl`` rows carry no ``type``.
* our release folder or a Hub id, read with ``datasets.load_dataset(path, config)`` using the
  release config names (``eng-instruction_generalization-general``, ``zh-role_specific``, ...);
  role descriptions come from its ``profiles-<lang>`` config.

A role without a description is an error naming the role. Held-out roles of role
generalisation (the roles of its test split) must never reach training: see
:func:`check_no_held_out_roles`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from rolellm_jax.jsonl import JsonlError, iter_jsonl

logger = logging.getLogger(__name__)

LANGS = ("eng", "zh")
SETTINGS = ("instruction_generalization", "role_generalization")
KINDS = ("general", "role_specific")
SPLITS = ("train", "test", "rolegpt_baseline")
# The 10 English roles the paper holds out for role generalisation; used only when the
# source has no role-generalisation test split to read them from.
PAPER_HELD_OUT_ROLES = frozenset({
    "Andrew Detmer", "Coriolanus", "Jack Sparrow", "John Doe", "John Keating",
    "Lestat de Lioncourt", "Professor G.H. Dorr", "Raylan Givens", "Tom Ripley", "Walt Kowalski",
})


class RoleBenchError(ValueError):
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


def config_name(lang: str, setting: str, kind: str) -> str:
    """The release config name (contract 9) of one (lang, setting, kind)."""
    _check_choice("lang", lang, LANGS)
    _check_choice("setting", setting, SETTINGS)
    _check_choice("kind", kind, KINDS)
    if lang == "zh":
        if setting != "instruction_generalization":
            raise RoleBenchError(f"setting={setting!r}: Chinese RoleBench has only instruction_generalization")
        return f"zh-{kind}"
    return f"eng-{setting}-{kind}"


def original_file(root: str | Path, lang: str, setting: str, kind: str, split: str) -> Path:
    """Path of one split file in the original RoleBench layout."""
    config_name(lang, setting, kind)  # validates the combination
    _check_choice("split", split, SPLITS)
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


def read_original_rows(
    root: str | Path, lang: str, setting: str, kind: str, split: str, on_bad_line: str = "fail"
) -> list[RoleRow]:
    """Rows of one split file of an original-layout folder."""
    path = original_file(root, lang, setting, kind, split)
    if not path.is_file():
        raise RoleBenchError(f"{path}: not found (original RoleBench layout under {root}; to train without it, leave {kind!r} out of data.kinds)")
    return [
        dataclasses.replace(row, source=f"{path}:{n}")
        for n, row in iter_jsonl(path, on_bad_line, lambda obj: parse_row(obj, kind))
    ]


def read_original_descriptions(root: str | Path, lang: str) -> dict[str, str]:
    """``profiles-<lang>/desc.json`` of an original-layout folder: role -> description."""
    _check_choice("lang", lang, LANGS)
    path = Path(root) / f"profiles-{lang}" / "desc.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RoleBenchError(f"{path}: not found (role descriptions are needed for the system instruction)") from None
    except json.JSONDecodeError as e:
        raise RoleBenchError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise RoleBenchError(f"{path}: expected a JSON object role -> description")
    for role, desc in data.items():
        if not isinstance(desc, str) or not desc.strip():
            raise RoleBenchError(f"{path}: role {role!r}: expected a non-empty description string")
    return {role.strip(): desc.strip() for role, desc in data.items()}


def read_release_rows(
    path: str, lang: str, setting: str, kind: str, split: str, on_bad_line: str = "fail"
) -> list[RoleRow]:
    """Rows of one config/split of our release folder or Hub id, via ``datasets.load_dataset``."""
    config = config_name(lang, setting, kind)
    dataset = _load_release(path, config, split)
    rows = []
    for i, obj in enumerate(dataset):
        source = f"{path}:{config}/{split}[{i}]"
        try:
            rows.append(parse_row(obj, kind, source))
        except ValueError as e:
            if on_bad_line == "fail":
                raise RoleBenchError(f"{source}: {e}") from None
            logger.warning("%s: skipped (on_bad_line=skip): %s", source, e)
    return rows


def read_release_descriptions(path: str, lang: str) -> dict[str, str]:
    """The ``profiles-<lang>`` config of our release: role -> description."""
    _check_choice("lang", lang, LANGS)
    dataset = _load_release(path, f"profiles-{lang}", "train")
    out: dict[str, str] = {}
    for i, obj in enumerate(dataset):
        role, desc = obj.get("role"), obj.get("description")
        if not isinstance(role, str) or not isinstance(desc, str) or not desc.strip():
            raise RoleBenchError(f"{path}:profiles-{lang}/train[{i}]: expected string 'role' and non-empty 'description'")
        out[role.strip()] = desc.strip()
    return out


def resolve_source(source: str | Path) -> str:
    """A local path as given when it exists, else relative to the repository checkout (so the
    default ``release/rolebench-demo`` works from any directory of an editable install), else
    ``source`` unchanged (a Hub id)."""
    if Path(source).exists():
        return str(source)
    in_repo = Path(__file__).resolve().parent.parent / source
    return str(in_repo) if not Path(source).is_absolute() and in_repo.exists() else str(source)


def read_rows(source: str | Path, lang: str, setting: str, kind: str, split: str, on_bad_line: str = "fail") -> list[RoleRow]:
    """Rows from either kind of source (an original-layout folder, else a release folder / Hub id)."""
    source = resolve_source(source)
    if is_original_layout(source):
        return read_original_rows(source, lang, setting, kind, split, on_bad_line)
    return read_release_rows(str(source), lang, setting, kind, split, on_bad_line)


def read_descriptions(source: str | Path, lang: str) -> dict[str, str]:
    source = resolve_source(source)
    if is_original_layout(source):
        return read_original_descriptions(source, lang)
    return read_release_descriptions(str(source), lang)


def describe(rows: list[RoleRow], descriptions: dict[str, str], where: str) -> dict[str, str]:
    """The description of every role in ``rows``; a missing one is an error naming the role."""
    missing = sorted({r.role for r in rows} - descriptions.keys())
    if missing:
        first = next(r for r in rows if r.role == missing[0])
        raise RoleBenchError(
            f"{first.source}: role {missing[0]!r} has no description in {where}"
            + (f" (also missing: {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else "")
        )
    return {r.role: descriptions[r.role] for r in rows}


def held_out_roles(source: str | Path, lang: str) -> frozenset[str]:
    """Roles of the role-generalisation test split (both kinds); the paper's list if it has none."""
    roles: set[str] = set()
    found = False
    for kind in KINDS:
        try:
            rows = read_rows(source, lang, "role_generalization", kind, "test", on_bad_line="skip")
        except (RoleBenchError, JsonlError, ValueError, FileNotFoundError):
            continue
        found = True
        roles.update(r.role for r in rows)
    if not found:
        logger.warning("%s: no role-generalisation test split; holding out the paper's 10 roles", source)
        return PAPER_HELD_OUT_ROLES
    return frozenset(roles)


def check_no_held_out_roles(rows: list[RoleRow], held_out: frozenset[str]) -> None:
    """Refuse training rows of a held-out role (role generalisation must test unseen roles)."""
    leaked = sorted({r.role for r in rows} & held_out)
    if leaked:
        first = next(r for r in rows if r.role == leaked[0])
        raise RoleBenchError(
            f"{first.source}: role {leaked[0]!r} is held out for role generalisation and must not be trained on"
            + (f" (also: {', '.join(map(repr, leaked[1:]))})" if len(leaked) > 1 else "")
        )


def _load_release(path: str, config: str, split: str):
    import datasets  # imported lazily: heavy, and the original layout does not need it

    try:
        return datasets.load_dataset(path, config, split=split)
    except (ValueError, FileNotFoundError, OSError) as e:  # unknown config/split, missing folder
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RoleBenchError(f"{path}: cannot load config {config!r} split {split!r}: {first_line}") from None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RoleBenchError(f"{name}={value!r}: expected one of {choices}")
