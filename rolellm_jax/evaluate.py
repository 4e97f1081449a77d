"""python -m rolellm_jax.evaluate: score predictions, generate and score a checkpoint, GPT judge.

    python -m rolellm_jax.evaluate score --pred PRED.jsonl --ref REF.jsonl [--mode paper|f1]
        [--refs max|first] [--lang eng|en|zh] [--zh-tokenizer char|jieba] [--strict]

``score`` prints one JSON object (score, row counts, unmatched rows with counts and examples,
warnings). Without ``--lang`` the language is the references' (detected); a ``--lang`` they
contradict is an error. Warnings also go to stderr; ``--strict`` makes unmatched rows an error
(exit 1). Bad input (a malformed line, a missing key) is one line on stderr, exit 1.

    python -m rolellm_jax.evaluate judge --pred NAME=FILE --pred NAME=FILE [...] --profiles P
        --model JUDGE --journal J.sqlite --out DIR [--ref REF.jsonl] [--lang en|zh] [--seed 0]

``judge`` ranks anonymised, shuffled answers with an LLM through OPENAI_BASE_URL / OPENAI_API_KEY
(see evaluation/judge.py) and writes judgments.jsonl and judge_summary.json (win rates).

    python -m rolellm_jax.evaluate run --ckpt CKPT --data DATA --out DIR [--split SETTING ...]
    python -m rolellm_jax.evaluate table DIR1/metrics.json DIR2/metrics.json

``run`` generates answers for the RoleBench test splits and writes predictions, metrics.json and
results.md (see evaluation/benchmark_run.py); ``table`` puts several runs in one table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from data_gen import rolebench as schema
from data_gen.llm.cli_flags import add_llm_flags
from rolellm_jax.errors import run_cli
from rolellm_jax.evaluation import judge
from rolellm_jax.evaluation.results import SETTINGS
from rolellm_jax.evaluation.rouge import MODES, REFS_POLICIES, ZH_TOKENIZERS, MetricError


def _add_rouge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode", choices=MODES, default="paper", help="paper: `rouge` recall (RoleLLM tables); f1: rouge_score F1"
    )
    p.add_argument("--refs", choices=REFS_POLICIES, default="max", help="several references: best one or the first one")
    p.add_argument(
        "--zh-tokenizer", choices=ZH_TOKENIZERS, default="char", help="Chinese tokens: characters or jieba words"
    )


def cmd_score(args: argparse.Namespace) -> int:
    from rolellm_jax.evaluation.scoring import score_files

    report = score_files(
        args.pred, args.ref, mode=args.mode, refs=args.refs, lang=args.lang, zh_tokenizer=args.zh_tokenizer
    )
    if not report["rows"]:  # a score of 0.0 over nothing would read as a result
        raise MetricError(
            f"{args.pred} vs {args.ref}: no prediction row matches a reference row (same role and "
            f"question; {report['prediction_rows']} prediction and {report['reference_rows']} reference rows)"
        )
    print(json.dumps(report, ensure_ascii=False, indent=2))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if args.strict and report["warnings"] else 0


def _short_lang(text: str) -> str:
    """--lang in any spelling (eng/en, zh) -> en / zh, the spelling of the Rouge tokenisers and prompts."""
    return schema.short_lang(schema.lang_flag(text))


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _old_mesh_flag(text: str) -> tuple[int, int, int]:
    """``--mesh 1,-1,1``: the spelling before --mesh.data/--mesh.fsdp/--mesh.tensor (as in training)."""
    try:
        data, fsdp, tensor = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three integers data,fsdp,tensor, got {text!r}") from None
    print(
        f"warning: --mesh {text} is deprecated: use --mesh.data={data} --mesh.fsdp={fsdp} --mesh.tensor={tensor}",
        file=sys.stderr,
    )
    return data, fsdp, tensor


def _add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="generate for RoleBench test splits and score them (CUS/RAW/SPE table)")
    p.add_argument("--ckpt", required=True, help="our checkpoint or an HF folder (with tokenizer files)")
    p.add_argument("--data", required=True, help="RoleBench: original-layout folder, our release folder or a Hub id")
    p.add_argument("--out", required=True, help="output folder (predictions/, metrics.json, results.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --out")
    p.add_argument(
        "--split",
        nargs="+",
        action="extend",
        choices=tuple(SETTINGS),
        type=lambda name: name.removesuffix("_eng") + "_en" if name.endswith("_eng") else name,  # both spellings
        help="benchmark settings to run (repeatable; default: all; _eng reads as _en)",
    )
    p.add_argument(
        "--name", help="model name in the table (default: the checkpoint folder's name; a run's for its export/)"
    )
    p.add_argument("--raw-ref-en", help="original answers of the English general questions (JSONL question/generated)")
    p.add_argument("--raw-ref-zh", help="original answers of the Chinese general questions")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="transformers' repetition_penalty: seen tokens' logits divided by it (1 = off; ~1.1-1.3 curbs loops)",
    )
    p.add_argument(
        "--min-new-tokens",
        type=int,
        default=0,
        help="transformers' min_new_tokens: no EOS before this many new tokens (0 = off; <= --max-new-tokens)",
    )
    p.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=0,
        help="transformers' no_repeat_ngram_size: no n-gram of tokens twice in prompt + answer (0 = off)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=_positive_int, help="first N rows of each test file (smoke runs)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="compute dtype override")
    p.add_argument("--mesh.data", dest="mesh_data", type=int, default=1, help="data-parallel mesh size")
    p.add_argument(
        "--mesh.fsdp", dest="mesh_fsdp", type=int, default=-1, help="FSDP mesh size (-1 = the rest of the devices)"
    )
    p.add_argument("--mesh.tensor", dest="mesh_tensor", type=int, default=1, help="tensor-parallel mesh size")
    p.add_argument("--mesh", type=_old_mesh_flag, dest="mesh_old", help=argparse.SUPPRESS)  # deprecated spelling
    _add_rouge_flags(p)
    p.add_argument("--verbose", action="store_true", help="show the datasets library's progress bars")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (rows, tokens/s, ETA per setting): for logs"
    )
    p.set_defaults(func=cmd_run)


def _add_table_parser(sub) -> None:
    p = sub.add_parser("table", help="one Markdown table (paper layout) from several runs' metrics.json")
    p.add_argument("metrics", nargs="+")
    p.set_defaults(func=cmd_table)


def _add_judge_parser(sub) -> None:
    """Register ``evaluate judge``."""
    p = sub.add_parser("judge", help="GPT ranking evaluation (win rates) through an OpenAI-compatible endpoint")
    p.add_argument(
        "--pred",
        action="append",
        required=True,
        metavar="NAME=FILE",
        help="a model's predictions (RoleBench rows); twice or more",
    )
    p.add_argument(
        "--profiles", required=True, help="role descriptions: JSON {role: description} or a RoleBench source"
    )
    p.add_argument("--ref", help="reference answers shown to the judge (RoleBench rows)")
    p.add_argument("--lang", type=_short_lang, default="en", help=schema.LANG_CHOICES_HELP)
    p.add_argument("--model", required=True, help="judge model name at the endpoint")
    p.add_argument("--journal", required=True, help="SQLite journal of the judge calls (resumable, cached)")
    p.add_argument("--out", required=True, help="folder for judgments.jsonl and judge_summary.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--retries", type=int, default=2, help="re-asks of a malformed ranking before it is recorded as unparsed"
    )
    p.add_argument("--max-questions", type=int)
    add_llm_flags(p)
    p.add_argument("--verbose", action="store_true", help="show the datasets library's progress bars")
    p.set_defaults(func=judge.cmd_judge)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rolellm_jax.evaluate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="Rouge-L of a prediction file against a reference file (RoleBench rows)")
    score.add_argument("--pred", required=True, help="predictions, RoleBench rows (a rolegpt_baseline.jsonl is valid)")
    score.add_argument("--ref", required=True, help="references, RoleBench rows (e.g. test.jsonl)")
    score.add_argument(
        "--lang",
        type=_short_lang,
        help=f"{schema.LANG_CHOICES_HELP} (default: detected from the references; one they contradict is an error)",
    )
    _add_rouge_flags(score)
    score.add_argument("--strict", action="store_true", help="exit 1 when rows are unmatched")
    score.set_defaults(func=cmd_score)
    _add_run_parser(sub)
    _add_table_parser(sub)
    _add_judge_parser(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from rolellm_jax.evaluation.benchmark_run import run_benchmark
    from rolellm_jax.evaluation.results import markdown_table

    print(markdown_table([run_benchmark(args)]), end="")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from rolellm_jax.evaluation.results import markdown_table, read_run_metrics

    print(markdown_table(read_run_metrics(args.metrics)), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rolellm_jax.data.rolebench_source import show_datasets_progress

    args = build_parser().parse_args(argv)
    show_datasets_progress(getattr(args, "verbose", False))
    if getattr(args, "mesh_old", None):
        args.mesh_data, args.mesh_fsdp, args.mesh_tensor = args.mesh_old
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
