"""Stage 4, cleaning: drop generated answers that break character, refuse, are empty, truncated or
in the wrong language. Every drop is counted by (stage, reason) in a report."""

from __future__ import annotations

import collections
import re

from data_gen.llm.types import ChatResult
from data_gen.rolebench import chinese_share

# Phrases that reveal a model behind the role, or refuse the task (matched case-insensitively).
_BREAKS_CHARACTER = re.compile(
    r"\bas an? (?:ai|artificial intelligence|(?:large )?language model)\b|"
    r"\bi(?:'m| am) (?:just |only |merely |simply )?an? (?:ai|artificial intelligence|(?:large )?language model)\b|"
    r"\bopenai\b|\bchatgpt\b|"
    r"作为一个?(?:人工智能|AI|语言模型)|我(?:只|只不过|仅仅)?是一个?(?:人工智能|AI|语言模型)",
    re.I,
)
_REFUSAL = re.compile(
    r"^\s*(?:i'm sorry|i am sorry|sorry,? (?:but )?i can(?:no|')t|i can(?:no|')t (?:help|assist|answer|comply)|"
    r"i (?:won't|will not) (?:help|answer|comply)|抱歉，?我(?:不能|无法)|对不起，?我(?:不能|无法))",
    re.I,
)

REASONS = ("failed_request", "empty", "truncated", "breaks_character", "refusal", "wrong_language")


def drop_reason(text: str, finish_reason: str | None, lang: str, error: str | None = None) -> str | None:
    """Why an answer must go, or None to keep it. ``lang`` is "eng" or "zh"."""
    if error is not None:
        return "failed_request"
    if not text.strip():
        return "empty"
    if finish_reason == "length":
        return "truncated"
    if _BREAKS_CHARACTER.search(text):
        return "breaks_character"
    if _REFUSAL.search(text):
        return "refusal"
    chinese = chinese_share(text)
    if chinese is not None and (chinese < 0.3 if lang == "zh" else lang == "eng" and chinese > 0.3):
        return "wrong_language"
    return None


def result_reason(r: ChatResult, lang: str) -> str | None:
    return drop_reason(r.text, r.finish_reason, lang, r.error)


class CleanReport:
    """Counts of kept and dropped items by stage and reason, overall and per role, for the manifest."""

    def __init__(self) -> None:
        self.dropped: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.kept: collections.Counter[str] = collections.Counter()
        self.role_dropped: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.role_kept: collections.Counter[tuple[str, str]] = collections.Counter()

    def drop(self, stage: str, reason: str, n: int = 1, role: str | None = None) -> None:
        self.dropped[stage][reason] += n
        if role is not None:
            self.role_dropped[stage, role][reason] += n

    def keep(self, stage: str, n: int = 1, role: str | None = None) -> None:
        self.kept[stage] += n
        if role is not None:
            self.role_kept[stage, role] += n

    def _roles(self, stage: str) -> list[str]:
        return sorted({r for s, r in [*self.role_dropped, *self.role_kept] if s == stage})

    def as_dict(self) -> dict:
        out = {}
        for s in sorted(set(self.dropped) | set(self.kept)):
            out[s] = {"kept": self.kept[s], "dropped": dict(sorted(self.dropped[s].items()))}
            if roles := self._roles(s):
                out[s]["roles"] = {
                    r: {"kept": self.role_kept[s, r], "dropped": dict(sorted(self.role_dropped[s, r].items()))}
                    for r in roles
                }
        return out

    def low_yield(self, stage: str, min_share: float, item_reasons: tuple[str, ...] | None = None) -> list[str]:
        """One line per role of ``stage`` that kept less than ``min_share`` of its items, with the
        drop reasons and counts. ``item_reasons``: the reasons that drop a whole item (default: all)."""
        lines = []
        for role in self._roles(stage):
            kept, dropped = self.role_kept[stage, role], self.role_dropped[stage, role]
            total = kept + sum(n for r, n in dropped.items() if item_reasons is None or r in item_reasons)
            if total and kept < min_share * total:
                reasons = ", ".join(f"{r} {n}" for r, n in dropped.most_common())
                lines.append(
                    f"{stage}: role {role!r} kept {kept} of {total} items ({kept / total:.0%}, below "
                    f"--min-keep-share {min_share:g}); dropped: {reasons}"
                )
        return lines
