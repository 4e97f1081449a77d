"""Score a prediction file against a reference file in RoleBench's row format.

Rows are matched on (role, stripped question). Rows present on one side only are reported with
counts and examples (never silently dropped from view): the score is the mean over matched rows,
and ``score_missing_as_zero`` also counts reference rows without a prediction as 0. The language is
the references' (detected) unless given; a given one they contradict (``en`` on Chinese) is an error.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_gen.files import DataFileError, iter_jsonl
from data_gen.rolebench import RoleRow, looks_chinese, parse_row, row_fields, short_lang
from rolellm_jax.evaluation.rouge import MetricError, rouge_l

logger = logging.getLogger(__name__)

EXAMPLES = 5  # how many unmatched / duplicate keys a report shows


@dataclass(frozen=True)
class Prediction:
    """One predicted answer (may be empty: an empty answer scores 0, it is not an error)."""

    role: str
    question: str
    answer: str
    source: str
    raw_question: str = ""


def parse_prediction(obj: dict[str, Any]) -> Prediction:
    """A RoleBench-format row whose first ``generated`` answer is the prediction."""
    role, question, generated = row_fields(obj, allow_no_answer=True)
    return Prediction(role.strip(), question.strip(), generated[0] if generated else "", "", question)


def iter_rows(path: str | Path, parse):
    """``(row number, parse(row))`` of a RoleBench JSONL file or of one of our release's parquet
    shards (same fields); a bad row fails naming file and row."""
    if Path(path).suffix != ".parquet":
        yield from iter_jsonl(path, "fail", parse)
        return
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's errors subclass these
        raise DataFileError(f"{path}: not a readable parquet file ({e})") from None
    for n, obj in enumerate(rows, 1):
        try:
            yield n, parse(obj)
        except ValueError as e:
            raise DataFileError(f"{path}:{n}: {e}") from None


def read_predictions(path: str | Path) -> list[Prediction]:
    return [dataclasses.replace(p, source=f"{path}:{n}") for n, p in iter_rows(path, parse_prediction)]


@dataclass(frozen=True)
class Reference:
    """A reference row and its question as written (the key strips it; exact text breaks ties)."""

    row: RoleRow
    raw_question: str

    role = property(lambda self: self.row.role)
    question = property(lambda self: self.row.question)
    source = property(lambda self: self.row.source)


def read_references(path: str | Path) -> list[Reference]:
    def parse(obj: dict[str, Any]) -> Reference:
        row = parse_row(obj, "role_specific" if "type" in obj else "general")
        return Reference(row, obj["question"])

    return [
        Reference(dataclasses.replace(r.row, source=f"{path}:{n}"), r.raw_question) for n, r in iter_rows(path, parse)
    ]


def _key_text(key: tuple[str, str]) -> str:
    return f"{key[0]} | {key[1][:80]}"


def _group(rows: Iterable) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for row in rows:
        out.setdefault((row.role, row.question), []).append(row)
    return out


def match_rows(predictions: Sequence[Prediction], references: Sequence[Reference]):
    """``(pairs, predictions_only, references_only)`` matched on (role, stripped question).

    RoleBench has questions that differ only in surrounding spaces; when a key occurs several
    times, rows with the identical question text pair first, the rest pair in file order.
    """
    pred_groups = _group(predictions)
    pairs: list[tuple[Prediction, Reference]] = []
    refs_only: list[Reference] = []
    for key, refs in _group(references).items():
        preds = pred_groups.pop(key, [])
        unpaired = []
        for ref in refs:
            same = next((p for p in preds if p.raw_question == ref.raw_question), None)
            if same is None:
                unpaired.append(ref)
            else:
                preds.remove(same)
                pairs.append((same, ref))
        for ref in unpaired:
            if preds:
                pairs.append((preds.pop(0), ref))
            else:
                refs_only.append(ref)
        if preds:
            pred_groups[key] = preds
    preds_only = [p for group in pred_groups.values() for p in group]
    return pairs, preds_only, refs_only


def detect_lang(texts: list[str]) -> tuple[str, float]:
    """(``zh`` or ``en``, share of Chinese texts) of a sample of the texts: Chinese when at least half are."""
    sample = [t for t in texts if t.strip()][:200]
    chinese = sum(looks_chinese(t, threshold=0.3) for t in sample) / len(sample) if sample else 0.0
    return ("zh" if chinese >= 0.5 else "en"), chinese


def resolve_lang(references: Sequence[Reference], lang: str | None, where: str, given_as: str = "--lang") -> str:
    """The language to score in: the one the references are written in when `lang` is None; a given
    `lang` that the references contradict is an error (English tokens on Chinese text score ~0)."""
    detected, chinese = detect_lang([r.row.answers[0] for r in references] + [r.question for r in references])
    if lang is None or not references:
        return lang or detected
    lang = short_lang(lang)
    if lang != detected:
        raise MetricError(
            f"{where}: {given_as} {lang} was given but {chinese:.0%} of the reference texts are Chinese: "
            f"use --lang {detected}, or leave --lang out"
        )
    return lang


def score_rows(
    predictions: Sequence[Prediction],
    references: Sequence[Reference],
    *,
    mode: str = "paper",
    refs: str = "max",
    lang: str | None = None,
    zh_tokenizer: str = "char",
    where: str = "",
    lang_given_as: str = "--lang",
) -> dict[str, Any]:
    """The score report (one JSON-able dict) of predictions against references.

    `lang` None: the references' language (detected); given (en/eng or zh): checked against them."""
    pairs, pred_only, ref_only = match_rows(predictions, references)
    detected = lang is None
    lang = resolve_lang(references, lang, where, lang_given_as)
    warnings: list[str] = []
    scores = [
        rouge_l(p.answer, r.row.answers, mode=mode, refs=refs, lang=lang, zh_tokenizer=zh_tokenizer) for p, r in pairs
    ]
    if pred_only or ref_only:
        warnings.append(
            f"{where}: {len(pred_only)} prediction row(s) have no reference and {len(ref_only)} reference row(s) "
            "have no prediction; 'score' averages the matched rows only"
        )
    return {
        "score": sum(scores) / len(scores) if scores else 0.0,
        "score_missing_as_zero": sum(scores) / len(references) if references else 0.0,
        "rows": len(scores),
        "prediction_rows": len(predictions),
        "reference_rows": len(references),
        "empty_predictions": sum(1 for p, _ in pairs if not p.answer.strip()),
        "mode": mode,
        "refs": refs,
        "lang": lang,
        "lang_detected": detected,
        **({"zh_tokenizer": zh_tokenizer} if lang == "zh" else {}),
        "unmatched": {
            "predictions_without_reference": {
                "count": len(pred_only),
                "examples": [f"{p.source}: {_key_text((p.role, p.question))}" for p in pred_only[:EXAMPLES]],
            },
            "references_without_prediction": {
                "count": len(ref_only),
                "examples": [f"{r.source}: {_key_text((r.role, r.question))}" for r in ref_only[:EXAMPLES]],
            },
        },
        "warnings": warnings,
    }


def score_files(pred: str | Path, ref: str | Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`score_rows` on two JSONL files."""
    report = score_rows(read_predictions(pred), read_references(ref), where=f"{pred} vs {ref}", **kwargs)
    return {"prediction_file": str(pred), "reference_file": str(ref), **report}
