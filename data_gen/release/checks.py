"""Split rules of a release, shared by `build` (which reports or fixes) and `verify` (which refuses).

A leak is a (role, question) asked in both train and test of one config. `rolegpt_baseline` holds
a baseline's predictions: the published zh-general baseline answers the train questions as well as
the test ones, so overlap with it (or with `raw`) is information, never a reason to drop train rows.
Questions are compared stripped: the original English files prefix questions with a space.
"""

from __future__ import annotations

from collections.abc import Mapping

from data_gen.release.layout import config_language

HELD_OUT_SPLIT = "test"
INFO_SPLITS = ("rolegpt_baseline", "raw")  # overlap with train is reported, not refused
Columns = Mapping[str, list]


def pairs(columns: Columns) -> set[tuple[str, str]]:
    return {(r, q.strip()) for r, q in zip(columns.get("role", []), columns.get("question", []))}


def leaks(splits: Mapping[str, Columns]) -> list[tuple[str, str]]:
    """Sorted (role, question) pairs in both train and test of one config."""
    train, test = splits.get("train"), splits.get(HELD_OUT_SPLIT)
    if not train or not test:
        return []
    return sorted(pairs(train) & pairs(test))


def describe_leaks(config: str, found: list[tuple[str, str]], limit: int = 3) -> str:
    shown = "; ".join(f"({role!r}, {question[:60]!r})" for role, question in found[:limit])
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return f"{config}: {len(found)} (role, question) pairs in both train and test: {shown}{more}"


def overlap_notes(config: str, splits: Mapping[str, Columns]) -> list[str]:
    """How many questions of each held-out or baseline split are also train questions (information)."""
    train = splits.get("train")
    if not train or "question" not in train:
        return []
    asked = {q.strip() for q in train["question"]}
    notes = []
    for split in (HELD_OUT_SPLIT, *INFO_SPLITS):
        other = splits.get(split)
        if other and "question" in other:
            questions = {q.strip() for q in other["question"]}
            notes.append(f"{config}: {len(questions & asked)} of {len(questions)} {split} instructions also in train")
    return notes


def undescribed_roles(configs: Mapping[str, Mapping[str, Columns]], unreadable: set[str] = frozenset()) -> list[str]:
    """One line per config whose rows have roles without a non-empty description in profiles-<lang>
    (training builds each row's system instruction from it and refuses such a role). Configs named
    in ``unreadable`` are reported elsewhere: a config that needs one of them is not judged."""
    problems = []
    for config, splits in configs.items():
        if config.startswith(("profiles-", "dialogues-")):
            continue
        profile_config = "profiles-" + ("zh" if config_language(config) == "zh" else "eng")
        if profile_config in unreadable:
            continue
        profiles = configs.get(profile_config, {}).get("train") or {}
        described = {r for r, d in zip(profiles.get("role", []), profiles.get("description", [])) if d and d.strip()}
        missing = sorted({r for columns in splits.values() for r in columns.get("role", [])} - described)
        if missing:
            names = ", ".join(repr(r) for r in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            where = profile_config if profile_config in configs else f"{profile_config} (no such config)"
            problems.append(f"{config}: {len(missing)} roles have no description in {where}: {names}")
    return problems
