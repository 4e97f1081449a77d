"""``python -m rolellm_jax.data``: check a RoleBench source (and conversations) and show what training sees."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np

from data_gen import rolebench as schema
from rolellm_jax.data import chat_format as chat
from rolellm_jax.data.examples import DataConfig
from rolellm_jax.data.rolebench_source import show_datasets_progress
from rolellm_jax.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    """``python -m rolellm_jax.data``: check a RoleBench source and show what training sees."""
    defaults = DataConfig()
    p = argparse.ArgumentParser(prog="python -m rolellm_jax.data", description=main.__doc__)
    p.add_argument("--source", default=defaults.source, help="original-layout folder, release folder or Hub id")
    p.add_argument("--lang", default=defaults.lang, type=schema.lang_flag, help=schema.LANG_CHOICES_HELP)
    p.add_argument("--setting", default=defaults.setting, choices=schema.SETTINGS)
    p.add_argument("--split", default=defaults.split)
    p.add_argument(
        "--kinds", nargs="*", default=list(defaults.kinds), help="RoleBench kinds (none: conversations only)"
    )
    p.add_argument("--conversations", help="a JSONL of multi-turn conversations to mix in (data.conversations)")
    p.add_argument("--seq-len", type=int, default=defaults.seq_len)
    p.add_argument("--references-per-row", default=defaults.references_per_row)
    p.add_argument("--on-bad-line", default=defaults.on_bad_line, choices=("fail", "skip"))
    p.add_argument("--tokenizer", required=True, help="a folder or Hub id with the model's tokenizer")
    p.add_argument("--family", default="llama", choices=chat.FAMILIES)
    p.add_argument("--verbose", action="store_true", help="show the datasets library's progress bars")
    args = p.parse_args(argv)
    show_datasets_progress(args.verbose)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("rolellm_jax.data").setLevel(logging.INFO)
    return run_cli(lambda: _show(args), extra=(OSError,))  # OSError: an unreadable tokenizer folder


def _show(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from rolellm_jax.checkpoints.tokenizer import load_tokenizer
    from rolellm_jax.data.packing import PackedBatches

    cfg = DataConfig(
        source=args.source,
        lang=args.lang,
        setting=args.setting,
        split=args.split,
        kinds=args.kinds,
        conversations=args.conversations,
        seq_len=args.seq_len,
        references_per_row=args.references_per_row,
        on_bad_line=args.on_bad_line,
    )
    local = args.tokenizer.startswith(("/", ".", "~")) or Path(args.tokenizer).exists()  # else a Hub id
    tokenizer = (
        load_tokenizer(Path(args.tokenizer).expanduser()) if local else AutoTokenizer.from_pretrained(args.tokenizer)
    )
    batches = PackedBatches.from_source(cfg, tokenizer, args.family, 1)
    row = batches.batch(0)
    first = row["segment_ids"][0] == 1
    ids, loss = row["input_ids"][0][first], row["loss_mask"][0][first]
    learnt = np.concatenate([[0], loss[:-1]]) > 0  # loss at t trains token t+1
    print(dataclasses.asdict(batches.stats))
    edges = [0, *np.flatnonzero(np.diff(learnt)) + 1, len(ids)]  # runs of prompt / answer tokens
    for begin, end in zip(edges[:-1], edges[1:]):
        print(
            ("--- answer (in the loss) ---\n" if learnt[begin] else "--- prompt ---\n")
            + tokenizer.decode(ids[begin:end])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
