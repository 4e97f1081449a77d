"""Stage 2, Context-Instruct: role-specific question / confidence / answer triples.

For every segment of a role's script the LLM is asked twice (prompt files ``ci_script_based_*``
and ``ci_script_agnostic_*``): script-based questions graded for completeness (from the segment)
and script-agnostic questions graded for factualness (from the description and catchphrases; the
segment index is the sample index, so each segment gets its own sample). Only high-confidence
items with a question and an answer are kept, answers pass the cleaning filters, and per role a
question whose normalised LCS similarity (Rouge-L-like, rapidfuzz) with an earlier kept question
reaches ``dedup_threshold`` is dropped. Output: ``WORK/context_instruct-<lang>.jsonl`` with rows
``{role, question, generated: [answer], type}``, type ``script_based`` | ``script_agnostic``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz.distance import LCSseq

from data_gen.files import write_jsonl
from data_gen.llm.client import LLMClient
from data_gen.llm.types import ChatRequest, ChatResult
from data_gen.pipeline.clean import CleanReport, result_reason
from data_gen.pipeline.config import GenConfig
from data_gen.pipeline.profiles import load_profiles
from data_gen.pipeline.templates import TemplateRegistry

STAGE = "context_instruct"

# The grade goes by the name our prompt uses (Confidence) or the paper's (Factualness for
# script-agnostic, Completeness for script-based questions), or a generic one; in English or Chinese.
_GRADE = (
    r"(?:confidence|factualness|factuality|completeness)(?:\s+(?:level|grade|score|rating))?|grade|score|rating"
    r"|置信度|信心|事实性|真实性|完整性|评分|评级|等级|打分|分数"
)
_FIELDS = {
    "question": r"question|q|问题|提问",
    "confidence": _GRADE,
    "answer": r"answer|a|response|回答|答案",
}
# A label at the start of a (cleaned) line: "Question 3:", "Q:", "**Answer**:", "置信度：".
_LABEL = re.compile(r"^(?P<label>" + "|".join(f"(?:{v})" for v in _FIELDS.values()) + r")\s*\d*\s*[:：.]\s*", re.I)
# Labels met inside a line ("... Confidence: high Answer: ...", "... 事实性：高 答案：...").
_INLINE = re.compile(r"\s+(?=(?:" + _GRADE + r"|answer|答案|回答)\s*[:：])", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]\s+|\(?\d{1,3}[.)、:：]\s*|#+\s*)")
_MARKUP = re.compile(r"\*\*|__|`")


@dataclass
class QA:
    question: str
    confidence: str
    answer: str


def _field_of(label: str) -> str:
    label = label.lower()
    for name, alternatives in _FIELDS.items():
        if re.fullmatch(alternatives, label, re.I):
            return name
    raise AssertionError(label)


def parse_qa(text: str) -> list[QA]:
    """Items from a model's numbered answer. Copes with numbering styles (1. 1) (1) Q1: -),
    bold/markdown markers, labels in English or Chinese, several fields on one line, wrapped
    lines, extra prose before and after (after a blank line), and missing fields (such items come back with '')."""
    items: list[dict[str, str]] = []
    current_field: str | None = None
    for raw in text.splitlines():
        line = _MARKUP.sub("", raw).strip()
        line = _BULLET.sub("", line).strip()
        if not line:  # a blank line ends a wrapped field (keeps closing prose out of the last answer)
            current_field = None
            continue
        for part in _INLINE.split(line):
            m = _LABEL.match(part)
            if m:
                name = _field_of(m["label"])
                # a question, or a field seen twice, starts a new item (missing fields stay '')
                if name == "question" or not items or items[-1].get(name):
                    items.append({})
                items[-1][name] = part[m.end() :].strip()
                current_field = name
            elif items and current_field:  # wrapped line of the last field
                items[-1][current_field] = (items[-1][current_field] + " " + part).strip()
            # else: prose before the first item: ignored
    return [QA(i.get("question", ""), i.get("confidence", ""), i.get("answer", "")) for i in items]


def is_high_confidence(grade: str) -> bool:
    """'high' (any case / markup), '高' / '很高', letter grade 'A', or a number >= 0.8 of its scale
    (8/10, 0.9, 4/5, 85%)."""
    g = grade.strip().lower().strip(".。 ")
    if not g:
        return False
    if g.startswith(("high", "高", "很高", "非常高")) or g in ("h", "very high", "a", "a+"):  # a: a letter grade
        return True
    m = re.match(r"(\d+(?:\.\d+)?)\s*(%|/\s*(\d+(?:\.\d+)?))?", g)
    if m:
        value = float(m[1])
        if m[2] == "%":
            return value >= 80
        scale = float(m[3]) if m[3] else (1.0 if value <= 1 else 10.0)
        return value / scale >= 0.8
    return False


def _tokens(text: str, lang: str) -> list[str]:
    return list(re.sub(r"\s+", "", text)) if lang == "zh" else re.findall(r"\w+", text.lower())


def dedup(questions: list[str], lang: str, threshold: float) -> list[int]:
    """Indices of the questions kept, in order: each is compared with every kept one by
    normalised LCS over words (characters for Chinese), i.e. a Rouge-L-style similarity."""
    kept: list[int] = []
    kept_tokens: list[list[str]] = []
    for i, q in enumerate(questions):
        toks = _tokens(q, lang)
        if any(LCSseq.normalized_similarity(toks, k) >= threshold for k in kept_tokens):
            continue
        kept.append(i)
        kept_tokens.append(toks)
    return kept


def build_requests(cfg: GenConfig, templates: TemplateRegistry, work: str | Path) -> list[tuple[str, str, ChatRequest]]:
    prof = load_profiles(work, cfg.lang)
    lang = cfg.prompt_lang
    params = {"temperature": cfg.ci_temperature, "max_tokens": cfg.ci_max_tokens}
    out = []
    for seg in prof.segments:
        role = seg["role"]
        based = templates.render(
            "ci_script_based",
            lang,
            role=role,
            title=seg["title"],
            segment=seg["text"],
            n=str(cfg.questions_per_segment),
        )
        agnostic = templates.render(
            "ci_script_agnostic", lang, role=role, description=prof.desc[role], n=str(cfg.questions_per_segment)
        )
        out.append((role, "script_based", ChatRequest([{"role": "user", "content": based}], params, 0)))
        # same prompt for every segment of a role: the segment index is the sample index (and seed)
        out.append(
            (
                role,
                "script_agnostic",
                ChatRequest(
                    [{"role": "user", "content": agnostic}], {**params, "seed": seg["segment_id"]}, seg["segment_id"]
                ),
            )
        )
    return out


def run_context_instruct(
    work: str | Path, cfg: GenConfig, client: LLMClient, templates: TemplateRegistry, report: CleanReport
) -> list[ChatResult]:
    """Stage 2. Idempotent: rebuilt from the journal on every run."""
    jobs = build_requests(cfg, templates, work)
    results = client.run_many([j[2] for j in jobs], stage="context-instruct")
    per_role: dict[str, list[dict]] = {}
    for (role, kind, _), r in zip(jobs, results):
        if not r.ok:
            report.drop(STAGE, "failed_request", role=role)
            continue
        items = parse_qa(r.text)
        if not items:
            report.drop(STAGE, "unparsable_answer", role=role)
        for n, qa in enumerate(items):
            # a cut-off answer (finish_reason "length") only truncates its last item
            finish = r.finish_reason if n == len(items) - 1 else "stop"
            if not qa.question or not qa.answer:
                report.drop(STAGE, "missing_field", role=role)
            elif not is_high_confidence(qa.confidence):
                report.drop(STAGE, "low_confidence", role=role)
            elif reason := result_reason(ChatResult("", qa.answer, finish, 0, 0, 0.0), cfg.lang):
                report.drop(STAGE, reason, role=role)
            else:
                per_role.setdefault(role, []).append(
                    {"role": role, "question": qa.question, "generated": [qa.answer], "type": kind}
                )
    rows = []
    for role, items in per_role.items():
        keep = dedup([i["question"] for i in items], cfg.lang, cfg.dedup_threshold)
        report.drop(STAGE, "near_duplicate", len(items) - len(keep), role=role)
        report.keep(STAGE, len(keep), role=role)
        rows.extend(items[i] for i in keep)
    report.keep(STAGE, 0)  # a stage that kept nothing still says so in the manifest
    write_jsonl(Path(work) / f"context_instruct-{cfg.lang}.jsonl", rows)
    return results
