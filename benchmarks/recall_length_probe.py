"""How much of a paper-mode score (Rouge-L recall) is answer length, for the CPU recipe's tables
(README "A real model on a laptop"). From `evaluate run` folders: each model's answers as they are
and cut to N characters, in both modes, beside two yardsticks no model wrote: the question itself
as the answer, and each reference scored against the row's other references (how well the
references' own authors agree; a model is scored against all of them, so this is a little lower
than a model as good as one author would get). Where test questions also occur in the train file
of the same kind (asked of other roles: RoleBench-zh's general questions), a third yardstick
answers those rows with another role's first train answer, each model is scored on the same rows,
and "closest train F1" is how near a model's answers are to the nearest of those train answers.

    python benchmarks/recall_length_probe.py --data runs/rolebench-sample \
        --setting instruction_generalization_zh --kind general runs/eval/base runs/eval/full-v3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from recipe_table import model_name  # (benchmarks/ is this script's folder)

from data_gen.rolebench import original_file
from rolellm_jax.evaluation.benchmark_run import SETTINGS
from rolellm_jax.evaluation.rouge import rouge_l
from rolellm_jax.evaluation.scoring import match_rows, read_predictions, read_references

MODES = ("paper", "f1")


def row(label: str, answers: list[str], references: list[list[str]], lang: str) -> str:
    means = [statistics.mean(rouge_l(a, r, mode=m, lang=lang) for a, r in zip(answers, references)) for m in MODES]
    chars = statistics.mean(len(a) for a in answers)
    return f"| {label} | {len(answers)} | {means[0]:.3f} | {means[1]:.3f} | {chars:.0f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="the data folder given to `evaluate run --data`")
    parser.add_argument("--setting", required=True, choices=tuple(SETTINGS))
    parser.add_argument("--kind", required=True, choices=("general", "role_specific"))
    parser.add_argument("--cut", type=int, nargs="+", default=[30, 50, 80], help="answer lengths in characters")
    parser.add_argument("evals", nargs="+", type=Path, help="`evaluate run --out` folders")
    args = parser.parse_args()
    if min(args.cut) < 1:
        parser.error(f"--cut {min(args.cut)}: lengths must be >= 1 character")
    lang, rb_setting, metric_lang = SETTINGS[args.setting]
    refs = read_references(original_file(args.data, lang, rb_setting, args.kind, "test"))
    print("| answers | rows | Rouge-L paper | Rouge-L f1 | chars |")
    print("|---|---|---|---|---|")
    predictions = [  # (model, its predictions): each folder read once, for both tables
        (model_name(folder), read_predictions(folder / f"predictions/{args.setting}-{args.kind}.jsonl"))
        for folder in args.evals
    ]
    for folder, (model, preds) in zip(args.evals, predictions):
        pairs, _, _ = match_rows(preds, refs)
        if not pairs:
            sys.exit(f"{folder}: no prediction of {args.setting}-{args.kind} matches a reference row")
        answers, references = [p.answer for p, _ in pairs], [r.row.answers for _, r in pairs]
        print(row(model, answers, references, metric_lang))
        for cut in args.cut:
            print(row(f"{model}, cut to {cut} characters", [a[:cut] for a in answers], references, metric_lang))
    print(row("the question itself", [r.raw_question for r in refs], [r.row.answers for r in refs], metric_lang))
    held, others = [], []
    for r in refs:
        for i, answer in enumerate(r.row.answers if len(r.row.answers) > 1 else ()):
            held.append(answer)
            others.append(r.row.answers[:i] + r.row.answers[i + 1 :])
    if held:
        print(row("a reference vs the row's others", held, others, metric_lang))
    overlap(args, lang, rb_setting, metric_lang, refs, predictions)
    return 0


def overlap(args, lang: str, rb_setting: str, metric_lang: str, refs, predictions: list[tuple[str, list]]) -> None:
    """The train-question yardstick of the docstring, and each model on those rows."""
    train: dict[str, list] = {}
    for r in read_references(original_file(args.data, lang, rb_setting, args.kind, "train")):
        train.setdefault(r.question, []).append(r)
    shared = [r for r in refs if any(t.role != r.role for t in train.get(r.question, ()))]
    print(f"\n{len(shared)} of {len(refs)} test questions are in the train rows, asked of other roles.")
    if not shared:
        return
    answers_of = lambda r: [a for t in train[r.question] if t.role != r.role for a in t.row.answers]
    print("\n| answers, on those rows | rows | Rouge-L paper | Rouge-L f1 | chars | closest train F1 |")
    print("|---|---|---|---|---|---|")
    references = [r.row.answers for r in shared]
    firsts = [answers_of(r)[0] for r in shared]
    print(row("another role's first train answer", firsts, references, metric_lang) + " - |")
    for model, preds in predictions:
        pairs, _, _ = match_rows(preds, shared)
        answers = [p.answer for p, _ in pairs]
        closest = statistics.mean(
            max(rouge_l(p.answer, a, mode="f1", lang=metric_lang) for a in answers_of(r)) for p, r in pairs
        )
        print(row(model, answers, [r.row.answers for _, r in pairs], metric_lang) + f" {closest:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
