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
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_gen.files import atomic_write_text, iter_jsonl, write_json
from data_gen.rolebench import RoleBenchError, RoleRow, is_original_layout, original_file, parse_row
from rolellm_jax.data.rolebench_source import (
    describe,
    read_descriptions,
    read_release_rows,
    read_rows,
    resolve_source,
)
from rolellm_jax.evaluation.scoring import Prediction, Reference, read_predictions, score_rows

logger = logging.getLogger(__name__)

# setting name -> (RoleBench language, RoleBench setting, metrics language)
SETTINGS: dict[str, tuple[str, str, str]] = {
    "instruction_generalization_en": ("eng", "instruction_generalization", "en"),
    "instruction_generalization_zh": ("zh", "instruction_generalization", "zh"),
    "role_generalization_en": ("eng", "role_generalization", "en"),
}
COLUMNS = ("CUS", "RAW", "SPE")


def answer_rows(
    model,
    cfg,
    tokenizer,
    rows: Sequence[RoleRow],
    descriptions: dict[str, str],
    lang: str,
    sampling,
    *,
    batch_size: int,
    mesh=None,
    progress: str | None = None,
) -> list[str]:
    """The model's answer to every row, prompted exactly as in training; `progress` names a bar
    (rows done / total, generated tokens/s, ETA) drawn on stderr, None for none."""
    from rolellm_jax.data.chat_format import render_prompts, role_system_text
    from rolellm_jax.inference.generate import generate

    systems = [role_system_text(lang, r.role, descriptions[r.role]) for r in rows]
    prompts = render_prompts(tokenizer, cfg.family, systems, [r.question for r in rows])
    with GenerationProgress(progress, len(rows)) as bar:
        outputs = generate(model, prompts, sampling, batch_size=batch_size, mesh=mesh, on_batch=bar.update)
    return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]


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


def evaluate_setting(
    model,
    cfg,
    tokenizer,
    data: str,
    setting: str,
    out: Path,
    sampling,
    *,
    batch_size: int,
    score_kwargs: dict,
    raw_ref: str | None,
    max_rows: int | None,
    mesh=None,
    progress: bool = True,
) -> dict[str, Any]:
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
        rows = rows[:max_rows] if max_rows else rows
        answers = answer_rows(
            model,
            cfg,
            tokenizer,
            rows,
            describe(rows, descriptions, str(data)),
            lang,
            sampling,
            batch_size=batch_size,
            mesh=mesh,
            progress=f"{setting}/{kind}" if progress else None,
        )
        path = out / "predictions" / f"{setting}-{kind}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for row, answer in zip(rows, answers, strict=True):
                f.write(
                    json.dumps({"role": row.role, "question": row.question, "generated": [answer]}, ensure_ascii=False)
                    + "\n"
                )
        preds = [
            Prediction(r.role, r.question, a, f"{path}:{i + 1}", r.question)
            for i, (r, a) in enumerate(zip(rows, answers, strict=True))
        ]
        refs = [Reference(r, r.question) for r in rows]
        column = "CUS" if kind == "general" else "SPE"
        reports[column] = score_rows(preds, refs, lang=metric_lang, where=f"{setting}/{kind}", **score_kwargs)
        raw = (raw_ref or raw_split(data, lang, rb_setting)) if kind == "general" else None
        if raw:
            reports["RAW"] = score_rows(
                preds, raw_references(rows, raw), lang=metric_lang, where=f"{setting}/raw", **score_kwargs
            )
    entry.update({c: reports[c] for c in COLUMNS if c in reports})
    present = [reports[c]["score"] for c in COLUMNS if c in reports]
    entry["avg"] = sum(present) / len(present) if present else None
    entry["avg_of"] = [c for c in COLUMNS if c in reports]  # avg over 2 or 3 columns: said, not guessed
    return entry


def markdown_table(metrics: Sequence[dict[str, Any]]) -> str:
    """The paper's layout: one table per setting, rows = models, columns CUS, RAW, SPE, avg."""
    lines = []
    settings = [s for s in SETTINGS if any(s in m["settings"] for m in metrics)]
    for setting in settings:
        lines += [f"### {setting}", "", "| model | CUS | RAW | SPE | avg |", "|---|---|---|---|---|"]
        for m in metrics:
            entry = m["settings"].get(setting)
            if entry is None:
                continue
            cells = [f"{entry[c]['score']:.4f}" if c in entry else "-" for c in COLUMNS]
            avg = f"{entry['avg']:.4f}" if entry.get("avg") is not None else "-"
            if entry.get("avg") is not None and entry.get("avg_of", list(COLUMNS)) != list(COLUMNS):
                avg += f" ({'+'.join(entry['avg_of'])})"  # e.g. no RAW: the mean of CUS and SPE only
            lines.append(f"| {m['model']} | " + " | ".join(cells) + f" | {avg} |")
        lines.append("")
    mode = metrics[0].get("mode", "paper") if metrics else "paper"
    lines.append(
        f"Rouge-L ({'recall of the `rouge` package, as in the paper' if mode == 'paper' else 'F1 of rouge_score'}; refs={metrics[0].get('refs', 'max') if metrics else 'max'})."
    )
    return "\n".join(lines) + "\n"


def cmd_table(args) -> int:
    metrics = []
    for path in args.metrics:
        if Path(path).is_dir():  # an `evaluate run` --out folder
            if not (Path(path) / "metrics.json").is_file():
                raise RoleBenchError(f"{path}: no metrics.json in this folder (give an `evaluate run` --out folder)")
            path = str(Path(path) / "metrics.json")
        try:
            metrics.append(_checked_metrics(json.loads(Path(path).read_text(encoding="utf-8")), path))
        except (OSError, json.JSONDecodeError) as e:
            raise RoleBenchError(f"{path}: cannot read metrics JSON ({e})") from None
    print(markdown_table(metrics), end="")
    return 0


def _checked_metrics(obj: Any, path: str) -> dict[str, Any]:
    """What markdown_table reads of a metrics.json written by `evaluate run`, or a one-line error."""

    def bad(why: str) -> RoleBenchError:
        return RoleBenchError(f"{path}: not a metrics.json of `evaluate run` ({why})")

    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str) or not isinstance(obj.get("settings"), dict):
        raise bad("expected an object with 'model' and 'settings'")
    for setting, entry in obj["settings"].items():
        if not isinstance(entry, dict):
            raise bad(f"settings.{setting} is not an object")
        for column in (c for c in COLUMNS if c in entry):
            cell = entry[column]
            if not (isinstance(cell, dict) and isinstance(cell.get("score"), (int, float))):
                raise bad(f"settings.{setting}.{column} has no numeric 'score'")
        if entry.get("avg") is not None and not isinstance(entry["avg"], (int, float)):
            raise bad(f"settings.{setting}.avg is not a number")
    return obj


def stop_token_ids(ckpt: str | Path, tokenizer) -> tuple[int, ...]:
    """The tokenizer's EOS plus the ``eos_token_id`` of the checkpoint's generation_config.json
    (chat models often end a turn with a token of their own, e.g. <|im_end|> or <|eot_id|>)."""
    ids = [tokenizer.eos_token_id]
    path = Path(ckpt) / "generation_config.json"
    if path.is_file():
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        except json.JSONDecodeError as e:
            raise RoleBenchError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        ids += value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(i for i in ids if isinstance(i, int)))


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


def cmd_run(args) -> int:
    from rolellm_jax.checkpoints.model_folder import check_model_folder, load_model
    from rolellm_jax.checkpoints.tokenizer import load_tokenizer
    from rolellm_jax.inference.generate import SamplingConfig
    from rolellm_jax.parallel import sharding

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RoleBenchError(f"--out {args.out}: is a file, not a folder")
    replacing = (out / "metrics.json").exists()  # its predictions/ would mix with this run's
    if replacing and not args.overwrite:
        raise RoleBenchError(
            f"--out {args.out}: already holds an evaluation (metrics.json); pass --overwrite to replace it"
        )
    check_model_folder(args.ckpt, "--ckpt")
    settings = _settings_to_run(args.split, args.data)  # before the model loads: data it lacks fails fast
    mesh = sharding.make_mesh(sharding.MeshConfig(data=args.mesh_data, fsdp=args.mesh_fsdp, tensor=args.mesh_tensor))
    model, cfg = load_model(args.ckpt, mesh=mesh, **({"dtype": args.dtype} if args.dtype else {}))
    tokenizer = load_tokenizer(args.ckpt)
    eos = stop_token_ids(args.ckpt, tokenizer)
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        eos_token_ids=eos,
        pad_token_id=tokenizer.pad_token_id or 0,
    )
    if replacing:  # only once this run has what it needs: a failed start keeps the earlier evaluation whole
        shutil.rmtree(out / "predictions", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    score_kwargs = {"mode": args.mode, "refs": args.refs, "zh_tokenizer": args.zh_tokenizer}
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
        "settings": {},
    }
    for setting in settings:
        metrics["settings"][setting] = evaluate_setting(
            model,
            cfg,
            tokenizer,
            args.data,
            setting,
            out,
            sampling,
            batch_size=args.batch_size,
            score_kwargs=score_kwargs,
            raw_ref=raw[SETTINGS[setting][2]],
            max_rows=args.max_rows,
            mesh=mesh,
            progress=not args.no_progress,
        )
    write_json(out / "metrics.json", metrics)
    table = markdown_table([metrics])
    atomic_write_text(out / "results.md", table)
    print(table, end="")
    return 0
