"""Data pipeline figures: batched vs one-by-one rendering+tokenisation, and packing fill of
best-fit decreasing vs next-fit (the obvious alternative), on synthetic RoleBench-sized examples.

    python benchmarks/data_pipeline.py [--examples 20000] [--seq-len 1024]

Examples are made up (English role system instruction + question + answer with RoleBench's
average lengths: ~26-word questions, ~30-word answers, 5 references per question); the tokenizer is a
byte-level BPE with a
4k vocabulary trained on them.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import time

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rolellm_jax.data import chat_format as chat
from rolellm_jax.data.examples import DataConfig, DataStats, Example, tokenize_examples
from rolellm_jax.data.packing import PackedBatches, pack

WORDS = (
    "ship wind storm captain sea rock lamp tide harbor sail map gold crew night star rain "
    "fern leaf root tree soil seed bloom moss garden river stone cloud path voyage"
).split()


def make_examples(n: int, rng: random.Random) -> list[Example]:
    """General-instruction rows as RoleBench has them: 5 reference answers per question."""
    roles = [(f"Role {i}", " ".join(rng.choices(WORDS, k=60))) for i in range(95)]
    out = []
    while len(out) < n:
        role, desc = rng.choice(roles)
        q = " ".join(rng.choices(WORDS, k=max(3, int(rng.gauss(26, 12))))) + "?"
        for _ in range(5):
            a = " ".join(rng.choices(WORDS, k=max(3, int(rng.gauss(30, 15))))) + "."
            out.append(Example(chat.role_system_text("eng", role, desc), q, a))
    return out[:n]


def tiny_bpe(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=4096,
            special_tokens=["<pad>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def next_fit(lengths: list[int], seq_len: int) -> int:
    rows, free = 0, 0
    for n in lengths:
        if n > free:
            rows, free = rows + 1, seq_len
        free -= n
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=20000)
    p.add_argument("--seq-len", type=int, default=1024)
    args = p.parse_args()
    rng = random.Random(0)
    examples = make_examples(args.examples, rng)
    tok = tiny_bpe([e.system + e.question + e.answer for e in examples[:2000]])

    t0 = time.perf_counter()
    tokenized = tokenize_examples(examples, tok, "llama", args.seq_len, DataStats())
    batched_s = time.perf_counter() - t0
    subset = examples[:2000]
    t0 = time.perf_counter()
    for e in subset:
        chat.render_example(tok, "llama", e.system, e.question, e.answer)
    single_s = (time.perf_counter() - t0) * len(examples) / len(subset)

    lengths = [len(ids) for ids, _ in tokenized]
    t0 = time.perf_counter()
    rows_bfd = len(pack(lengths, args.seq_len, seed=0))
    pack_s = time.perf_counter() - t0
    rows_nf = next_fit(lengths, args.seq_len)
    total = sum(lengths)
    t0 = time.perf_counter()
    batches = PackedBatches(DataConfig(seq_len=args.seq_len), tok, "llama", 64, examples=examples)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(20):
        batches.batch(k)
    batch_ms = (time.perf_counter() - t0) / 20 * 1e3
    print(
        f"date {datetime.date.today()}  host {platform.processor() or platform.machine()}  "
        f"examples {len(examples)}  mean tokens {np.mean(lengths):.0f}  seq_len {args.seq_len}"
    )
    print(f"render+tokenise, batched (ours):     {len(examples) / batched_s:9.0f} examples/s")
    print(f"render+tokenise, one by one:         {len(examples) / single_s:9.0f} examples/s (extrapolated from 2000)")
    print(
        f"packing best-fit decreasing (ours):  {rows_bfd} rows, "
        f"fill {100 * total / (rows_bfd * args.seq_len):.1f}%, {pack_s:.2f} s"
    )
    print(f"packing next-fit in order:           {rows_nf} rows, fill {100 * total / (rows_nf * args.seq_len):.1f}%")
    print(f"PackedBatches end to end: {build_s:.1f} s to build; batch(k) of 64 x {args.seq_len}: {batch_ms:.1f} ms")


if __name__ == "__main__":
    main()
