"""python -m rolellm_jax.evaluate: score predictions, generate and score a checkpoint, GPT judge.

    python -m rolellm_jax.evaluate score --pred PRED.jsonl --ref REF.jsonl [--mode paper|f1]
        [--refs max|first] [--lang en|zh] [--zh-tokenizer char|jieba] [--strict]

``score`` prints one JSON object (score, row counts, unmatched rows with counts and examples,
warnings). Warnings also go to stderr; ``--strict`` makes unmatched rows or a language warning
an error (exit 1). Bad input (a malformed line, a missing key) is one line on stderr, exit 2.

    python -m rolellm_jax.evaluate judge --pred NAME=FILE --pred NAME=FILE [...] --profiles P
        --model JUDGE --journal J.sqlite --out DIR [--ref REF.jsonl] [--lang en|zh] [--seed 0]

``judge`` ranks anonymised, shuffled answers with an LLM through OPENAI_BASE_URL / OPENAI_API_KEY
(see :mod:`rolellm_jax.judge`) and writes judgments.jsonl and judge_summary.json (win rates).

    python -m rolellm_jax.evaluate run --ckpt CKPT --data DATA --out DIR [--split SETTING ...]
    python -m rolellm_jax.evaluate table DIR1/metrics.json DIR2/metrics.json

``run`` generates answers for the RoleBench test splits and writes predictions, metrics.json and
results.md (see :mod:`rolellm_jax.eval_run`); ``table`` puts several runs in one table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rolellm_jax import eval_run, judge

from rolellm_jax.jsonl import JsonlError
from rolellm_jax.metrics import LANGS, MODES, REFS_POLICIES, ZH_TOKENIZERS, MetricError
from rolellm_jax.rolebench import RoleBenchError

# Errors whose message is already the one line a user needs.
USER_ERRORS: tuple[type[Exception], ...] = (JsonlError, RoleBenchError, MetricError, judge.JudgeError)


def _add_rouge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="paper", help="paper: `rouge` recall (RoleLLM tables); f1: rouge_score F1")
    p.add_argument("--refs", choices=REFS_POLICIES, default="max", help="several references: best one or the first one")
    p.add_argument("--zh-tokenizer", choices=ZH_TOKENIZERS, default="char", help="Chinese tokens: characters or jieba words")


def cmd_score(args: argparse.Namespace) -> int:
    from rolellm_jax.scoring import score_files

    report = score_files(args.pred, args.ref, mode=args.mode, refs=args.refs, lang=args.lang, zh_tokenizer=args.zh_tokenizer)
    if not report["rows"]:  # a score of 0.0 over nothing would read as a result
        raise MetricError(f"{args.pred} vs {args.ref}: no prediction row matches a reference row (same role and "
                          f"question; {report['prediction_rows']} prediction and {report['reference_rows']} reference rows)")
    print(json.dumps(report, ensure_ascii=False, indent=2))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if args.strict and report["warnings"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rolellm_jax.evaluate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="Rouge-L of a prediction file against a reference file (RoleBench rows)")
    score.add_argument("--pred", required=True, help="predictions, RoleBench rows (a rolegpt_baseline.jsonl is valid)")
    score.add_argument("--ref", required=True, help="references, RoleBench rows (e.g. test.jsonl)")
    score.add_argument("--lang", choices=LANGS, default="en")
    _add_rouge_flags(score)
    score.add_argument("--strict", action="store_true", help="exit 1 when rows are unmatched or the language looks wrong")
    score.set_defaults(func=cmd_score)
    eval_run.add_parser(sub, _add_rouge_flags)
    eval_run.add_table_parser(sub)
    judge.add_parser(sub)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    errors = list(USER_ERRORS)
    # Imported here: each brings jax / transformers / openai, which `score` alone does not need.
    from data_gen.llm import LLMError
    from rolellm_jax.chat import ChatFormatError
    from rolellm_jax.generate import GenerationError
    from rolellm_jax.models.config import ConfigError
    from rolellm_jax.safetensors_io import CheckpointError
    from rolellm_jax.sharding import ShardingError
    from rolellm_jax.tokenizer import TokenizerError

    errors += [LLMError, ChatFormatError, GenerationError, ConfigError, CheckpointError, ShardingError, TokenizerError]
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
