"""The paper's GPT ranking evaluation: an LLM judge ranks anonymised answers of several models.

For every question answered by all models, the judge gets the role's name and description, the
question (plus the reference answers when a reference file is given) and the models' answers
under anonymous names ("Model A", ...) in an order shuffled per question (seeded), and must answer
with a list of ``{"model", "reason", "rank"}`` dicts (rank 1 = best). Prompts are the template
files ``rolellm_jax/prompts/judge_{en,zh}.txt`` (system text, a ``=====`` line, user text).

Calls go through the data_gen data_gen.llm.client.LLMClient (journal/cache, retries, rate and
cost limits; the same endpoint flags as data_gen). A malformed answer is asked again (a new sample
index, so a new journal entry) up to ``retries`` times, then recorded as unparsed. So is a question
whose requests failed for good (endpoint down, timeouts): the results are still written, then the
command fails naming the error, since the win rates leave those questions out; the journal holds
the failures, and a rerun with ``--retry-failed`` asks them again. Results: per-question judgments
(JSONL) and per-model win rates:

- ``win_rate``: over parsed questions and the other models, the share of head-to-head comparisons
  the model wins (ties count one half);
- ``top1_rate``: the share of parsed questions where the model is ranked first (ties included).
"""

from __future__ import annotations

import ast
import importlib.resources
import json
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_gen.files import write_json, write_jsonl
from rolellm_jax.errors import UserError

SEPARATOR = "\n=====\n"
_LIST_RE = re.compile(r"\[.*\]", re.DOTALL)


class JudgeError(UserError, ValueError):
    """Unusable judge input; the message is one line naming the file, role or flag."""


@dataclass(frozen=True)
class JudgeItem:
    """One question to judge: the role, its description and every model's answer."""

    role: str
    description: str
    question: str
    answers: dict[str, str]  # real model name -> answer
    references: tuple[str, ...] = ()


def load_template(lang: str) -> tuple[string.Template, string.Template]:
    """(system, user) templates of ``judge_<lang>.txt``."""
    if lang not in ("en", "zh"):
        raise JudgeError(f"--lang {lang!r}: expected en or zh")
    text = (
        importlib.resources.files("rolellm_jax.evaluation.prompts")
        .joinpath(f"judge_{lang}.txt")
        .read_text(encoding="utf-8")
    )
    system, user = text.split(SEPARATOR, 1)
    return string.Template(system.strip()), string.Template(user.strip())


def anonymous_names(n: int, lang: str) -> list[str]:
    return [("Model " if lang == "en" else "模型") + string.ascii_uppercase[i] for i in range(n)]


def build_messages(item: JudgeItem, lang: str, rng: random.Random) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The chat messages for one item and the anonymous-name -> real-model mapping (shuffled order)."""
    system, user = load_template(lang)
    models = sorted(item.answers)
    rng.shuffle(models)
    names = dict(zip(anonymous_names(len(models), lang), models, strict=True))
    answers = json.dumps(
        [{"model": anon, "answer": item.answers[real]} for anon, real in names.items()], ensure_ascii=False, indent=1
    )
    reference = ""
    if item.references:
        label = "Reference answer(s): " if lang == "en" else "参考答案："
        reference = label + json.dumps(list(item.references), ensure_ascii=False) + "\n"
    text = user.substitute(
        role=item.role, description=item.description, question=item.question, reference=reference, answers=answers
    )
    return [{"role": "system", "content": system.substitute()}, {"role": "user", "content": text}], names


def parse_ranking(text: str, names: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """``{anonymous name: {"rank": int, "reason": str}}``, or None when the answer is malformed.

    Accepts JSON or a Python literal, inside code fences or surrounded by prose; every anonymous
    name must be ranked exactly once with an integer rank >= 1.
    """
    match = _LIST_RE.search(text or "")
    if match is None:
        return None
    parsed: Any = None
    for loader in (json.loads, ast.literal_eval):
        try:
            parsed = loader(match.group(0))
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if not isinstance(parsed, list):
        return None
    out: dict[str, dict[str, Any]] = {}
    for entry in parsed:
        if not isinstance(entry, dict) or "model" not in entry or "rank" not in entry:
            return None
        name, rank = str(entry["model"]).strip(), entry["rank"]
        try:
            rank = int(str(rank).strip())
        except ValueError:
            return None
        if name not in names or name in out or rank < 1:
            return None
        out[name] = {"rank": rank, "reason": str(entry.get("reason", ""))}
    return out if set(out) == set(names) else None


def win_rates(rankings: Sequence[dict[str, int]], models: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per model: pairwise ``win_rate`` (ties = 1/2) and ``top1_rate`` over parsed rankings."""
    out = {}
    for model in models:
        wins = comparisons = top1 = 0.0
        for ranks in rankings:
            mine = ranks[model]
            top1 += mine == min(ranks.values())
            for other, theirs in ranks.items():
                if other != model:
                    comparisons += 1
                    wins += 1.0 if mine < theirs else 0.5 if mine == theirs else 0.0
        out[model] = {
            "win_rate": wins / comparisons if comparisons else 0.0,
            "top1_rate": top1 / len(rankings) if rankings else 0.0,
        }
    return out


REASK_TEMPERATURE = 0.7  # of the re-asks after a malformed ranking


def judge(
    items: Sequence[JudgeItem], client, *, lang: str, seed: int = 0, retries: int = 2, params: dict | None = None
) -> dict[str, Any]:
    """Rank every item with ``client`` (an LLMClient); returns ``{"judgments": [...], "summary": {...}}``."""
    from data_gen.llm.types import ChatRequest

    params = dict(params or {"temperature": 0.0})
    prepared = [build_messages(item, lang, random.Random(f"{seed}:{index}")) for index, item in enumerate(items)]
    judgments: list[dict[str, Any] | None] = [None] * len(prepared)
    last_text: dict[int, str] = {}
    errors: dict[int, str] = {}
    pending = list(range(len(prepared)))
    for attempt in range(retries + 1):
        if not pending:
            break
        asked = _attempt_params(params, attempt)
        results = client.run_many(
            [ChatRequest(prepared[i][0], asked, attempt) for i in pending], stage=f"judge (attempt {attempt + 1})"
        )
        still = []
        for i, result in zip(pending, results, strict=True):
            names = prepared[i][1]
            ranking = parse_ranking(result.text, list(names)) if result.ok else None
            if ranking is None:
                last_text[i] = result.text
                if not result.ok:
                    errors[i] = result.error or "request failed"
                still.append(i)
                continue
            judgments[i] = _judgment(
                items[i],
                "parsed",
                attempt + 1,
                names,
                ranks={names[a]: v["rank"] for a, v in ranking.items()},
                reasons={names[a]: v["reason"] for a, v in ranking.items()},
            )
        pending = still
    for i in pending:
        error = {"error": errors[i]} if i in errors else {}
        judgments[i] = _judgment(
            items[i], "unparsed", retries + 1, prepared[i][1], last_answer=last_text.get(i, ""), **error
        )
    done = [j for j in judgments if j is not None]
    return {"judgments": done, "summary": _summary(done, items, client, lang, seed)}


def _attempt_params(params: dict, attempt: int) -> dict:
    # Asked verbatim at temperature 0 a malformed ranking comes back the same (and is paid again):
    # re-asks sample, with a seed per attempt so that they stay reproducible where honoured
    if attempt == 0:
        return params
    return {**params, "temperature": max(params.get("temperature", 0.0), REASK_TEMPERATURE), "seed": attempt}


def _judgment(item: JudgeItem, status: str, attempts: int, names: dict, **fields: Any) -> dict[str, Any]:
    return {
        "role": item.role,
        "question": item.question,
        "status": status,
        "attempts": attempts,
        "shown_as": names,
        **fields,
    }


def _summary(done: list[dict[str, Any]], items: Sequence[JudgeItem], client, lang: str, seed: int) -> dict[str, Any]:
    models = sorted({m for item in items for m in item.answers})
    parsed = [j["ranks"] for j in done if j["status"] == "parsed"]
    return {
        "questions": len(done),
        "parsed": len(parsed),
        "unparsed": len(done) - len(parsed),
        "failed": sum("error" in j for j in done),  # unparsed because the requests failed, not the answer
        "models": win_rates(parsed, models),
        "judge_model": getattr(client, "model", None),
        "lang": lang,
        "seed": seed,
    }


# --- inputs -------------------------------------------------------------------------------------


def read_profiles(path: str, lang: str) -> dict[str, str]:
    """Role descriptions: a JSON file {role: description} or a RoleBench source (profiles)."""
    from rolellm_jax.data.rolebench_source import read_descriptions

    p = Path(path)
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise JudgeError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise JudgeError(f"{p}: expected a JSON object role -> description")
        return {k.strip(): v.strip() for k, v in data.items()}
    return read_descriptions(path, "eng" if lang == "en" else "zh")


def build_items(
    predictions: dict[str, str],
    profiles: dict[str, str],
    *,
    reference: str | None = None,
    max_questions: int | None = None,
    seed: int = 0,
) -> tuple[list[JudgeItem], dict[str, Any]]:
    """Items for the questions every model answered; the rest is counted in the returned report."""
    from rolellm_jax.evaluation.scoring import match_rows, read_predictions, read_references

    if len(predictions) < 2:
        raise JudgeError("the judge ranks at least two models: give --pred NAME=FILE at least twice")
    per_model = {name: read_predictions(path) for name, path in predictions.items()}
    first = next(iter(per_model))
    answer_of, common = _common_questions(per_model)
    refs: dict[tuple[str, str], tuple[str, ...]] = {}
    if reference:
        pairs, _, _ = match_rows(per_model[first], read_references(reference))
        refs = {(p.role, p.question): r.row.answers for p, r in pairs}
    _check_profiles(common, profiles)
    answered_by_all = len(common)
    if not common:  # win rates over nothing would read as a result
        raise JudgeError(
            "no question is answered in every --pred file "
            f"({', '.join(f'{n}: {len(p)} rows' for n, p in per_model.items())})"
        )
    if max_questions is not None and len(common) > max_questions:
        common = sorted(random.Random(seed).sample(common, max_questions), key=common.index)
    items = [
        JudgeItem(
            role,
            profiles[role],
            question,
            {n: answer_of[n][(role, question)] for n in per_model},
            refs.get((role, question), ()),
        )
        for role, question in common
    ]
    total = len(set().union(*(answer_of[n].keys() for n in per_model)))
    report = {
        "questions_in_any_file": total,
        "questions_answered_by_all": answered_by_all,
        "questions_judged": len(items),
    }
    return items, report


def _common_questions(per_model: dict[str, list]) -> tuple[dict[str, dict], list[tuple[str, str]]]:
    """(model -> (role, question) -> its first answer, the questions every model answered in the first file's order)."""
    answer_of: dict[str, dict] = {name: {} for name in per_model}
    for name, preds in per_model.items():
        for p in preds:
            answer_of[name].setdefault((p.role, p.question), p.answer)
    keys = dict.fromkeys((p.role, p.question) for p in next(iter(per_model.values())))
    return answer_of, [k for k in keys if all(k in answers for answers in answer_of.values())]


def _check_profiles(common: list[tuple[str, str]], profiles: dict[str, str]) -> None:
    missing_roles = sorted({k[0] for k in common} - profiles.keys())
    if missing_roles:
        raise JudgeError(
            f"role {missing_roles[0]!r} has no description in the profiles"
            + (f" (also {missing_roles[1:]})" if len(missing_roles) > 1 else "")
        )


def cmd_judge(args) -> int:
    from data_gen.llm.cli_flags import client_from_args

    predictions = {}
    for spec in args.pred:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise JudgeError(f"--pred {spec!r}: expected NAME=FILE")
        if name in predictions:
            raise JudgeError(f"--pred {spec!r}: model name {name!r} given twice")
        predictions[name] = path
    if Path(args.out).exists() and not Path(args.out).is_dir():  # found out before paying, not after
        raise JudgeError(f"--out {args.out}: is a file, not a folder")
    items, report = build_items(
        predictions,
        read_profiles(args.profiles, args.lang),
        reference=args.ref,
        max_questions=args.max_questions,
        seed=args.seed,
    )
    client = client_from_args(args, args.model, args.journal)
    try:
        result = judge(items, client, lang=args.lang, seed=args.seed, retries=args.retries)
    finally:
        client.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "judgments.jsonl", result["judgments"])
    summary = {**report, **result["summary"], "cost_usd": round(client.spent, 6)}
    write_json(out / "judge_summary.json", summary)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    if summary["failed"]:
        error = next(j["error"] for j in result["judgments"] if "error" in j)
        raise JudgeError(
            f"{summary['failed']} of {summary['questions']} questions got no ranking: the judge requests "
            f"failed ({error}); {out / 'judge_summary.json'} leaves them out. They are journaled as "
            "failed: rerun with --retry-failed"
        )
    return 0
