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

from data_gen.files import DataFileError, iter_jsonl
from data_gen.rolebench import (
    KINDS,
    LANGS,
    PAPER_HELD_OUT_ROLES,
    RoleBenchError,
    RoleRow,
    check_choice,
    config_name,
    is_original_layout,
    original_file,
    parse_row,
)

logger = logging.getLogger(__name__)


def read_original_rows(
    root: str | Path, lang: str, setting: str, kind: str, split: str, on_bad_line: str = "fail"
) -> list[RoleRow]:
    """Rows of one split file of an original-layout folder."""
    path = original_file(root, lang, setting, kind, split)
    if not path.is_file():
        raise RoleBenchError(
            f"{path}: not found (original RoleBench layout under {root}; "
            f"to train without it, leave {kind!r} out of data.kinds)"
        )
    return [
        dataclasses.replace(row, source=f"{path}:{n}")
        for n, row in iter_jsonl(path, on_bad_line, lambda obj: parse_row(obj, kind))
    ]


def read_original_descriptions(root: str | Path, lang: str) -> dict[str, str]:
    """``profiles-<lang>/desc.json`` of an original-layout folder: role -> description."""
    check_choice("lang", lang, LANGS)
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
    check_choice("lang", lang, LANGS)
    dataset = _load_release(path, f"profiles-{lang}", "train")
    out: dict[str, str] = {}
    for i, obj in enumerate(dataset):
        role, desc = obj.get("role"), obj.get("description")
        if not isinstance(role, str) or not isinstance(desc, str) or not desc.strip():
            raise RoleBenchError(
                f"{path}:profiles-{lang}/train[{i}]: expected string 'role' and non-empty 'description'"
            )
        out[role.strip()] = desc.strip()
    return out


def resolve_source(source: str | Path) -> str:
    """A local path as given when it exists, else relative to the repository checkout (so the
    default ``release/rolebench-demo`` works from any directory of an editable install), else
    ``source`` unchanged (a Hub id)."""
    if Path(source).exists():
        return str(source)
    in_repo = Path(__file__).resolve().parents[2] / source
    return str(in_repo) if not Path(source).is_absolute() and in_repo.exists() else str(source)


def read_rows(
    source: str | Path, lang: str, setting: str, kind: str, split: str, on_bad_line: str = "fail"
) -> list[RoleRow]:
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
        except (RoleBenchError, DataFileError, ValueError, FileNotFoundError):
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


_SHOW_DATASETS_PROGRESS = False


def show_datasets_progress(show: bool) -> None:
    """Whether `datasets` may draw its "Generating <split> split" bars (the CLIs' --verbose)."""
    global _SHOW_DATASETS_PROGRESS
    _SHOW_DATASETS_PROGRESS = show


def _load_release(path: str, config: str, split: str):
    import datasets  # imported lazily: heavy, and the original layout does not need it

    quiet = not _SHOW_DATASETS_PROGRESS and not datasets.utils.are_progress_bars_disabled()
    if quiet:  # one bar per split of every config read: noise around our own messages
        datasets.utils.disable_progress_bars()
    try:
        return datasets.load_dataset(path, config, split=split)
    except (ValueError, FileNotFoundError, OSError) as e:  # unknown config/split, missing folder
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RoleBenchError(f"{path}: cannot load config {config!r} split {split!r}: {first_line}") from None
    finally:
        if quiet:
            datasets.utils.enable_progress_bars()
