"""Base vs fine-tuned table of the CPU recipe (README "A real model on a laptop"), from the folders
`evaluate run` wrote: per setting and kind, Rouge-L in both modes, mean answer length in characters
(the references' beside it) and distinct-2 (repetition; the references' beside it).

    python benchmarks/recipe_table.py --data runs/rolebench-sample runs/eval/base runs/eval/rocit
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_gen.rolebench import original_file
from rolellm_jax.evaluation.benchmark_run import SETTINGS
from rolellm_jax.evaluation.diversity import distinct_n, mean_chars
from rolellm_jax.evaluation.scoring import match_rows, read_predictions, read_references, score_rows

COLUMN = {"general": "CUS", "role_specific": "SPE"}


def rows_of(eval_dir: Path, data: Path):
    model = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))["model"]
    for pred in sorted((eval_dir / "predictions").glob("*.jsonl")):
        setting, kind = pred.stem.rsplit("-", 1)
        lang, rb_setting, metric_lang = SETTINGS[setting]
        refs = read_references(original_file(data, lang, rb_setting, kind, "test"))
        preds = read_predictions(pred)
        pairs, _, _ = match_rows(preds, refs)
        scores = {m: score_rows(preds, refs, mode=m, lang=metric_lang)["score"] for m in ("paper", "f1")}
        answers = [p.answer for p, _ in pairs]
        references = [r.row.answers[0] for _, r in pairs]
        yield (
            f"| {model} | {setting} | {COLUMN[kind]} | {len(pairs)} | {scores['paper']:.3f} | {scores['f1']:.3f} "
            f"| {mean_chars(answers):.0f} / {mean_chars(references):.0f} "
            f"| {distinct_n(answers, 2, metric_lang):.3f} / {distinct_n(references, 2, metric_lang):.3f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="the data folder given to `evaluate run --data`")
    parser.add_argument("evals", nargs="+", type=Path, help="`evaluate run --out` folders")
    args = parser.parse_args()
    print("| model | setting | column | rows | Rouge-L paper | Rouge-L f1 | chars (ref) | distinct-2 (ref) |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.evals:
        for line in rows_of(folder, args.data):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
