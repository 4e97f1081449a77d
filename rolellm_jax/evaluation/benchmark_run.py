"""``evaluate run``: generate answers for RoleBench test splits and score them in the paper's layout.

For each benchmark setting (instruction generalisation en / zh, role generalisation en) the test
rows of both kinds are prompted with the role system instruction (``chat.render_prompts``, the
rendering used in training) and answered with :func:`rolellm_jax.generate.generate`. Written:

- ``predictions/<setting>-<kind>.jsonl``: RoleBench rows (role, question, generated=[answer]),
  scorable later with ``evaluate score``;
- ``metrics.json``: per setting the CUS / RAW / SPE score reports and their average;
- ``results.md``: the paper's table (rows = models, columns CUS, RAW, SPE, avg).

CUS scores general questions against the role-styled references, SPE role-specific questions
against theirs, RAW general questions against the instruction datasets' original answers, which
the published RoleBench does not ship: they are read from the data's own ``raw`` split (our releases,
a data_gen shard set's ``general/raw.jsonl``) when it has one, else from ``--raw-ref-en`` /
``--raw-ref-zh`` (JSONL of {"question", "generated": [answer]} rows); without either RAW is left out
(shown as "-") and ``avg`` is the mean of the columns there are, named in ``avg_of`` and in the table.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_gen.files import atomic_write_text, iter_jsonl, write_json, write_jsonl
from data_gen.rolebench import RoleBenchError, RoleRow, is_original_layout, original_file, parse_row
from rolellm_jax.data.rolebench_source import (
    describe,
    read_descriptions,
    read_release_rows,
    read_rows,
    resolve_source,
)
from rolellm_jax.evaluation.results import COLUMNS, SETTINGS, markdown_table
from rolellm_jax.evaluation.scoring import Prediction, Reference, read_predictions, score_rows

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class BenchmarkRun:
    """How one model answers and is scored: the same for every setting of a run."""

    model: Any
    cfg: Any  # its ModelConfig
    tokenizer: Any
    sampling: Any  # inference.generate.SamplingConfig
    batch_size: int
    score_kwargs: dict[str, Any]  # mode, refs, zh_tokenizer
    max_rows: int | None = None
    mesh: Any = None
    progress: bool = True


def answer_rows(
    run: BenchmarkRun, rows: Sequence[RoleRow], descriptions: dict[str, str], lang: str, progress: str | None = None
) -> list[str]:
    """The model's answer to every row, prompted exactly as in training; `progress` names a bar
    (rows done / total, generated tokens/s, ETA) drawn on stderr, None for none."""
    from rolellm_jax.data.chat_format import render_prompts, role_system_text
    from rolellm_jax.inference.generate import generate

    systems = [role_system_text(lang, r.role, descriptions[r.role]) for r in rows]
    prompts = render_prompts(run.tokenizer, run.cfg.family, systems, [r.question for r in rows])
    with GenerationProgress(progress, len(rows)) as bar:
        outputs = generate(
            run.model, prompts, run.sampling, batch_size=run.batch_size, mesh=run.mesh, on_batch=bar.update
        )
    return [run.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]


class GenerationProgress:
    """A tqdm bar over the rows of one setting/kind with the generated tokens per second (as training has)."""

    def __init__(self, name: str | None, total: int):
        self.start, self.tokens = time.perf_counter(), 0
        self.bar = tqdm(total=total, desc=name, unit="row", disable=name is None, dynamic_ncols=True)

    def update(self, rows: int, new_tokens: int) -> None:
        self.tokens += new_tokens
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.1f} tok/s", refresh=False)
        self.bar.update(rows)

    def __enter__(self) -> GenerationProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def raw_references(general: Sequence[RoleRow], raw: str | Path | Sequence[RoleRow]) -> list[Reference]:
    """General rows re-referenced with the original dataset answers (matched on the question); `raw`
    is a JSONL file (--raw-ref-*) or the rows of the data's own raw split."""
    answers: dict[str, list[str]] = {}
    if isinstance(raw, (str, Path)):
        for p in read_predictions(raw):  # same row format; the role is not needed
            answers.setdefault(p.question, []).append(p.answer)
    else:
        for r in raw:
            answers.setdefault(r.question, []).extend(r.answers)
    where = str(raw) if isinstance(raw, (str, Path)) else "raw split"
    out = []
    for row in general:
        found = [a for a in answers.get(row.question, []) if a.strip()]
        if found:
            out.append(Reference(RoleRow(row.role, row.question, tuple(found), row.kind, None, where), row.question))
    return out


def raw_split(data: str, lang: str, setting: str) -> list[RoleRow] | None:
    """The data's own original answers of the general test questions: a release's ``raw`` split, a
    shard set's ``general/raw.jsonl``; None when it has none."""
    source = resolve_source(data)
    if is_original_layout(source):
        path = original_file(source, lang, setting, "general", "test").with_name("raw.jsonl")
        if not path.is_file():
            return None
        return [r for _, r in iter_jsonl(path, "fail", lambda obj: parse_row(obj, "general", str(path)))]
    try:
        return read_release_rows(source, lang, setting, "general", "raw")
    except RoleBenchError:  # no raw split in this release
        return None


def evaluate_setting(run: BenchmarkRun, data: str, setting: str, out: Path, raw_ref: str | None) -> dict[str, Any]:
    """Generate, write and score one setting; returns its metrics entry."""
    lang, rb_setting, metric_lang = SETTINGS[setting]
    descriptions = read_descriptions(data, lang)
    entry: dict[str, Any] = {"missing": []}
    reports: dict[str, dict] = {}
    for kind in ("general", "role_specific"):
        try:
            rows = read_rows(data, lang, rb_setting, kind, "test")
        except RoleBenchError as e:
            logger.warning("%s/%s: skipped: %s", setting, kind, e)
            entry["missing"].append(f"{kind}: {e}")
            continue
        rows = rows[: run.max_rows] if run.max_rows else rows
        bar = f"{setting}/{kind}" if run.progress else None
        answers = answer_rows(run, rows, describe(rows, descriptions, str(data)), lang, bar)
        preds = _write_predictions(out / "predictions" / f"{setting}-{kind}.jsonl", rows, answers)
        refs = [Reference(r, r.question) for r in rows]
        column = "CUS" if kind == "general" else "SPE"
        reports[column] = score_rows(preds, refs, lang=metric_lang, where=f"{setting}/{kind}", **run.score_kwargs)
        raw = (raw_ref or raw_split(data, lang, rb_setting)) if kind == "general" else None
        if raw:
            reports["RAW"] = score_rows(
                preds, raw_references(rows, raw), lang=metric_lang, where=f"{setting}/raw", **run.score_kwargs
            )
    entry.update({c: reports[c] for c in COLUMNS if c in reports})
    present = [reports[c]["score"] for c in COLUMNS if c in reports]
    entry["avg"] = sum(present) / len(present) if present else None
    entry["avg_of"] = [c for c in COLUMNS if c in reports]  # avg over 2 or 3 columns: said, not guessed
    return entry


def _write_predictions(path: Path, rows: Sequence[RoleRow], answers: Sequence[str]) -> list[Prediction]:
    """RoleBench rows (role, question, generated=[answer]), scorable later with `evaluate score`."""
    write_jsonl(
        path, ({"role": r.role, "question": r.question, "generated": [a]} for r, a in zip(rows, answers, strict=True))
    )
    return [
        Prediction(r.role, r.question, a, f"{path}:{i + 1}", r.question)
        for i, (r, a) in enumerate(zip(rows, answers, strict=True))
    ]


def _settings_to_run(chosen: list[str] | None, data: str) -> list[str]:
    """The --split settings, once each; by default every setting whose language the data has (a
    data_gen shard set is English or Chinese only)."""
    if chosen:
        return list(dict.fromkeys(chosen))
    missing: dict[str, str] = {}
    for lang in dict.fromkeys(lang for lang, _, _ in SETTINGS.values()):
        try:
            read_descriptions(data, lang)
        except RoleBenchError as e:
            missing[lang] = str(e)
            logger.warning("no %s profiles (%s): its settings are skipped; --split chooses them", lang, e)
    settings = [s for s, (lang, _, _) in SETTINGS.items() if lang not in missing]
    if not settings:
        raise RoleBenchError(f"no setting can run on {data}: {missing['eng']}")
    return settings


def run_benchmark(args) -> dict[str, Any]:
    """`evaluate run`: load the checkpoint, evaluate every chosen setting, write predictions/,
    metrics.json and results.md into ``args.out``; returns the metrics."""
    from rolellm_jax.checkpoints.model_folder import check_model_folder, load_model
    from rolellm_jax.checkpoints.tokenizer import load_tokenizer, stop_token_ids
    from rolellm_jax.inference.generate import SamplingConfig
    from rolellm_jax.parallel import sharding

    out = Path(args.out)
    replacing = _check_out(out, args.overwrite)
    check_model_folder(args.ckpt, "--ckpt")
    settings = _settings_to_run(args.split, args.data)  # before the model loads: data it lacks fails fast
    mesh = sharding.make_mesh(sharding.MeshConfig(data=args.mesh_data, fsdp=args.mesh_fsdp, tensor=args.mesh_tensor))
    model, cfg = load_model(args.ckpt, mesh=mesh, **({"dtype": args.dtype} if args.dtype else {}))
    tokenizer = load_tokenizer(args.ckpt)
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        min_new_tokens=args.min_new_tokens,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        seed=args.seed,
        eos_token_ids=stop_token_ids(args.ckpt, tokenizer),
        pad_token_id=tokenizer.pad_token_id or 0,
    )
    sampling.check(cfg.vocab_size)  # before any split runs: a bad setting fails in one line, not mid-run
    run = BenchmarkRun(
        model,
        cfg,
        tokenizer,
        sampling,
        args.batch_size,
        {"mode": args.mode, "refs": args.refs, "zh_tokenizer": args.zh_tokenizer},
        max_rows=args.max_rows,
        mesh=mesh,
        progress=not args.no_progress,
    )
    if replacing:  # only once this run has what it needs: a failed start keeps the earlier evaluation whole
        shutil.rmtree(out / "predictions", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    raw = {"en": args.raw_ref_en, "zh": args.raw_ref_zh}
    ckpt_dir = Path(args.ckpt).resolve()
    default_name = ckpt_dir.parent.name if ckpt_dir.name == "export" else ckpt_dir.name  # runs/NAME/export
    metrics: dict[str, Any] = {
        "model": args.name or default_name,
        "checkpoint": str(args.ckpt),
        "data": str(args.data),
        "mode": args.mode,
        "refs": args.refs,
        "sampling": dataclasses.asdict(sampling),
        "settings": {s: evaluate_setting(run, args.data, s, out, raw[SETTINGS[s][2]]) for s in settings},
    }
    if not any(c in entry for entry in metrics["settings"].values() for c in COLUMNS):
        missing = "; ".join(m for entry in metrics["settings"].values() for m in entry["missing"])
        raise RoleBenchError(f"{args.data}: no test rows to evaluate in {', '.join(settings)} ({missing})")
    write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "results.md", markdown_table([metrics]))
    return metrics


def _check_out(out: Path, overwrite: bool) -> bool:
    """Whether ``out`` holds an earlier evaluation to replace (its predictions/ would mix with ours)."""
    if out.exists() and not out.is_dir():
        raise RoleBenchError(f"--out {out}: is a file, not a folder")
    replacing = (out / "metrics.json").exists()
    if replacing and not overwrite:
        raise RoleBenchError(f"--out {out}: already holds an evaluation (metrics.json); pass --overwrite to replace it")
    return replacing
