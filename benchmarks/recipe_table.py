"""Base vs fine-tuned table of the CPU recipe (README "A real model on a laptop"), from the folders
`evaluate run` wrote: per setting and kind, Rouge-L in both modes, mean answer length in characters
(the references' beside it) and distinct-2 (repetition; the references' beside it). With
``--bootstrap N``, a second table: each later folder against the first, row by row (paired on role
and question), the mean difference and its 95% interval from N resamples of the rows.

    python benchmarks/recipe_table.py --data runs/rolebench-sample runs/eval/base runs/eval/rocit [--bootstrap 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from data_gen.rolebench import original_file
from rolellm_jax.evaluation.benchmark_run import SETTINGS
from rolellm_jax.evaluation.diversity import distinct_n, mean_chars
from rolellm_jax.evaluation.rouge import rouge_l
from rolellm_jax.evaluation.scoring import match_rows, read_predictions, read_references, score_rows

COLUMN = {"general": "CUS", "role_specific": "SPE"}


def model_name(eval_dir: Path) -> str:
    """The model name an `evaluate run --out` folder was written under (a one-line exit if it is none)."""
    if not (eval_dir / "metrics.json").is_file():
        sys.exit(f"{eval_dir}: no metrics.json: not an `evaluate run --out` folder")
    return json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))["model"]


def cells(eval_dir: Path, data: Path):
    """``(setting, kind, metric_lang, predictions, references, pairs)`` of each predictions file."""
    for pred in sorted((eval_dir / "predictions").glob("*.jsonl")):
        setting, kind = pred.stem.rsplit("-", 1)
        lang, rb_setting, metric_lang = SETTINGS[setting]
        refs = read_references(original_file(data, lang, rb_setting, kind, "test"))
        preds = read_predictions(pred)
        yield setting, kind, metric_lang, preds, refs, match_rows(preds, refs)[0]


def rows_of(eval_dir: Path, data: Path):
    model = model_name(eval_dir)
    for setting, kind, metric_lang, preds, refs, pairs in cells(eval_dir, data):
        scores = {m: score_rows(preds, refs, mode=m, lang=metric_lang)["score"] for m in ("paper", "f1")}
        answers = [p.answer for p, _ in pairs]
        references = [r.row.answers[0] for _, r in pairs]
        yield (
            f"| {model} | {setting} | {COLUMN[kind]} | {len(pairs)} | {scores['paper']:.3f} | {scores['f1']:.3f} "
            f"| {mean_chars(answers):.0f} / {mean_chars(references):.0f} "
            f"| {distinct_n(answers, 2, metric_lang):.3f} / {distinct_n(references, 2, metric_lang):.3f} |"
        )


def per_row_scores(eval_dir: Path, data: Path) -> dict[str, dict[tuple[str, str], dict[tuple, float]]]:
    """{mode: {(setting, kind): {(role, question, n-th of that key): score}}} of one evaluation folder."""
    out: dict[str, dict] = {"paper": {}, "f1": {}}
    for setting, kind, metric_lang, _, _, pairs in cells(eval_dir, data):
        seen: dict[tuple[str, str], int] = {}
        keys = []
        for p, _ in pairs:
            seen[p.role, p.question] = seen.get((p.role, p.question), -1) + 1
            keys.append((p.role, p.question, seen[p.role, p.question]))
        for mode, table in out.items():
            table[setting, kind] = {
                key: rouge_l(p.answer, r.row.answers, mode=mode, lang=metric_lang) for key, (p, r) in zip(keys, pairs)
            }
    return out


def paired_rows(folders: list[Path], data: Path, resamples: int):
    rng = np.random.default_rng(0)
    scored = [per_row_scores(folder, data) for folder in folders]  # each folder read and scored once
    for mode in ("paper", "f1"):
        base = scored[0][mode]
        for folder, by_mode in zip(folders[1:], scored[1:]):
            model = model_name(folder)
            for cell, scores in by_mode[mode].items():
                keys = sorted(scores.keys() & base.get(cell, {}).keys())
                if not keys:
                    continue
                diff = np.array([scores[k] - base[cell][k] for k in keys])
                means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
                low, high = np.quantile(means, [0.025, 0.975])
                yield (
                    f"| {model} | {cell[0]} | {COLUMN[cell[1]]} | {mode} | {len(keys)} | {diff.mean():+.3f} "
                    f"| [{low:+.3f}, {high:+.3f}] | {(diff > 0).sum()} / {(diff < 0).sum()} |"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="the data folder given to `evaluate run --data`")
    parser.add_argument("evals", nargs="+", type=Path, help="`evaluate run --out` folders")
    parser.add_argument("--bootstrap", type=int, default=0, help="resamples of the paired table (0 = no table)")
    args = parser.parse_args()
    if args.bootstrap < 0 or (args.bootstrap and len(args.evals) < 2):
        parser.error("--bootstrap needs a count >= 1 and at least two folders (the first is the baseline)")
    print("| model | setting | column | rows | Rouge-L paper | Rouge-L f1 | chars (ref) | distinct-2 (ref) |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.evals:
        for line in rows_of(folder, args.data):
            print(line)
    if args.bootstrap:
        print(f"\nAgainst {args.evals[0]}, per row (95% interval of {args.bootstrap} resamples):\n")
        print("| model | setting | column | mode | rows | mean difference | 95% interval | rows better / worse |")
        print("|---|---|---|---|---|---|---|---|")
        for line in paired_rows(args.evals, args.data, args.bootstrap):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
