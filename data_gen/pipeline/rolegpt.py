"""Stage 3, RoleGPT: answers to general instructions in character, by dialogue engineering.

Messages for (role, instruction): system = the role system instruction
(``prompts/role_system_{en,zh}.txt`` with the role's name and description + catchphrases), then
``few_shot`` user/assistant turns retrieved with BM25 (bm25s) from the role's own profile dialogues
(a line said to the role -> the role's reply), then the instruction as the last user turn.
``samples`` answers are drawn (sample index 0..n-1; the last one is the RoleGPT baseline, the rest
the references); answers that fail the cleaning filters are dropped and counted. The same prompt,
one sample, also answers every role-specific question (the role-specific RoleGPT baseline).

General instructions come from a JSONL of ``{"instruction", "input"?, "output"?}``; the question is
instruction + "\\n" + input; ``output`` is kept as the RAW reference (see shards.py).
Outputs: ``WORK/rolegpt-<lang>.jsonl`` rows ``{role, question, generated, baseline, raw, instruction_id}``
and ``WORK/rolegpt_role_specific-<lang>.jsonl`` rows ``{role, question, baseline}``.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from data_gen.files import DataFileError, iter_jsonl, read_jsonl, write_jsonl
from data_gen.llm.client import LLMClient
from data_gen.llm.types import ChatRequest, ChatResult
from data_gen.pipeline.clean import CleanReport, result_reason
from data_gen.pipeline.config import GenConfig
from data_gen.pipeline.profiles import NARRATION, load_profiles
from data_gen.pipeline.templates import TemplateRegistry

STAGE = "rolegpt"


def _import_bm25s():
    """bm25s imports jax when it can (for top-k); data_gen must not pull jax in (slow, and libtpu
    initialisation on TPU hosts), so hide it during the import unless jax is already loaded."""
    if "jax" not in sys.modules:
        sys.modules["jax"] = None  # type: ignore[assignment]  # makes `import jax.lax` raise ImportError
        try:
            import bm25s
        finally:
            del sys.modules["jax"]
    import bm25s

    # its import sets its own logger to DEBUG: a line per index built, whatever the CLI asked for
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def load_instructions(path: str | Path) -> list[dict]:
    """General instructions: rows with a non-empty string ``instruction``; ``input`` and
    ``output`` optional strings. Errors name file and line."""
    rows = []
    for n, row in iter_jsonl(path):
        for key in ("instruction", "input", "output"):
            if key in row and row[key] is not None and not isinstance(row[key], str):
                raise DataFileError(f"{path}:{n}: {key!r} must be a string")
        if not str(row.get("instruction") or "").strip():
            raise DataFileError(f"{path}:{n}: missing 'instruction'")
        rows.append(row)
    if not rows:
        raise DataFileError(f"{path}: no instructions")
    return rows


def question_of(row: dict) -> str:
    inp = (row.get("input") or "").strip()
    return row["instruction"].strip() + ("\n" + inp if inp else "")


def tokenize(text: str, lang: str) -> list[str]:
    """Words (lower-cased) for English, characters for Chinese (no segmenter dependency)."""
    if lang == "zh":
        return [c for c in text if not c.isspace() and c.isalnum()]
    return re.findall(r"\w+", text.lower())


class DialogueRetriever:
    """BM25 over one role's (line said to the role, the role's reply) pairs."""

    def __init__(self, role: str, rows: list[dict], lang: str):
        self.lang = lang
        self.pairs: list[tuple[str, str]] = []
        for prev, cur in zip(rows, rows[1:]):
            if (
                cur["role"] == role
                and prev["act_id"] == cur["act_id"]
                and prev["role"] not in (role, NARRATION)
                and prev["content"].strip()
                and cur["content"].strip()
            ):
                self.pairs.append((prev["content"], cur["content"]))
        self.index = None
        corpus = [tokenize(q + " " + a, lang) or ["_"] for q, a in self.pairs]
        if corpus:
            bm25s = _import_bm25s()
            self.index = bm25s.BM25()
            self.index.index(corpus, show_progress=False)

    def top(self, query: str, k: int) -> list[tuple[str, str]]:
        if self.index is None or k <= 0:
            return []
        k = min(k, len(self.pairs))
        tokens = [t for t in tokenize(query, self.lang) if t in self.index.vocab_dict] or ["_"]
        if "_" in tokens and "_" not in self.index.vocab_dict:
            return self.pairs[:k]  # nothing in common: the first turns, deterministically
        # numpy top-k always: bm25s's 'auto' picks jax when it is loaded, and the two break score
        # ties differently, which would change the prompts (and the paid requests) by environment.
        docs, _ = self.index.retrieve([tokens], k=k, show_progress=False, backend_selection="numpy")
        return [self.pairs[int(i)] for i in docs[0]]


def role_messages(system: str, shots: list[tuple[str, str]], question: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}]
    for user, assistant in shots:
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    msgs.append({"role": "user", "content": question})
    return msgs


def run_rolegpt(
    work: str | Path,
    instructions_path: str | Path,
    cfg: GenConfig,
    client: LLMClient,
    templates: TemplateRegistry,
    report: CleanReport,
) -> list[ChatResult]:
    """Stage 3. Idempotent: rebuilt from the journal on every run."""
    work = Path(work)
    prof = load_profiles(work, cfg.lang)
    instructions = load_instructions(instructions_path)
    system_tpl = templates.text("role_system", cfg.prompt_lang)
    params = {"temperature": cfg.rolegpt_temperature, "max_tokens": cfg.rolegpt_max_tokens}
    retrievers = {role: DialogueRetriever(role, prof.dialogues[role], cfg.lang) for role in prof.desc}
    systems = {role: system_tpl.format(role=role, description=prof.desc[role]) for role in prof.desc}

    def messages(role: str, question: str) -> list[dict[str, str]]:
        return role_messages(systems[role], retrievers[role].top(question, cfg.few_shot), question)

    # seed = sample index: endpoints that honour it (OpenAI, vLLM) make the draws reproducible too
    jobs, reqs = [], []
    for role in prof.desc:
        for i, row in enumerate(instructions):
            q = question_of(row)
            msgs = messages(role, q)
            jobs.append((role, i, q))
            reqs.extend(ChatRequest(msgs, {**params, "seed": s}, s) for s in range(cfg.samples))
    ci_rows = read_jsonl(work / f"context_instruct-{cfg.lang}.jsonl")
    last = cfg.samples - 1
    spec_reqs = [ChatRequest(messages(r["role"], r["question"]), {**params, "seed": last}, last) for r in ci_rows]
    results = client.run_many(reqs + spec_reqs, stage="rolegpt")

    rows = _general_rows(jobs, results, instructions, cfg, report)
    write_jsonl(work / f"rolegpt-{cfg.lang}.jsonl", rows)
    spec_rows = _role_specific_rows(ci_rows, results[len(reqs) :], cfg.lang, report)
    write_jsonl(work / f"rolegpt_role_specific-{cfg.lang}.jsonl", spec_rows)
    return results


def _general_rows(
    jobs: list[tuple[str, int, str]],
    results: list[ChatResult],
    instructions: list[dict],
    cfg: GenConfig,
    report: CleanReport,
) -> list[dict]:
    """One row per (role, instruction) with a clean reference: the first ``samples - 1`` draws are the
    references, the last the RoleGPT baseline."""
    rows = []
    for n, (role, i, q) in enumerate(jobs):
        samples = results[n * cfg.samples : (n + 1) * cfg.samples]
        refs = []
        for r in samples[:-1]:
            if reason := result_reason(r, cfg.lang):
                report.drop(STAGE, reason, role=role)
            else:
                refs.append(r.text.strip())
        base = samples[-1]
        if reason := result_reason(base, cfg.lang):
            report.drop(STAGE + "_baseline", reason)
        else:
            report.keep(STAGE + "_baseline")
        if not refs:
            report.drop(STAGE, "no_clean_reference", role=role)
            continue
        report.keep(STAGE, role=role)
        rows.append(
            {
                "role": role,
                "question": q,
                "generated": refs,
                "baseline": None if reason else base.text.strip(),
                "raw": instructions[i].get("output"),
                "instruction_id": i,
            }
        )
    return rows


def _role_specific_rows(ci_rows: list[dict], results: list[ChatResult], lang: str, report: CleanReport) -> list[dict]:
    """The RoleGPT baseline answer of each Context-Instruct question that came back clean."""
    spec_rows = []
    for row, r in zip(ci_rows, results):
        if reason := result_reason(r, lang):
            report.drop(STAGE + "_role_specific_baseline", reason)
            continue
        report.keep(STAGE + "_role_specific_baseline")
        spec_rows.append({"role": row["role"], "question": row["question"], "baseline": r.text.strip()})
    return spec_rows
