"""Rouge-L speed: rolellm_jax.evaluation.rouge vs the reference packages on the same 5,000 pairs, one run.

Pairs are RoleBench-shaped (several sentences, 20-80 words, 1-3 references) drawn with a fixed seed;
both sides get the same stripped strings and must agree to 1e-6 (checked here too).

    python benchmarks/rouge_speed.py [--pairs 5000]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time

from rouge import Rouge as RougePkg
from rouge_chinese import Rouge as RougeChinesePkg
from rouge_score.rouge_scorer import RougeScorer

from rolellm_jax.evaluation.rouge import rouge_l

WORDS = (
    "ah well you see I always have a few tricks up my sleeve or in this case coffin it wasn't easy though as "
    "had to wait for just the right moment break open casket without drawing too much attention myself but "
    "they say desperate times call measures and I've been good at thinking on feet captain sea rum ship savvy"
).split()
ZH = list(
    "俺老孙算起来从到中间差了整整一个月也就是天哎呀这简单两日期嘛下头脑清楚的很朕必须保持警惕以保障大清王朝稳定生杀予夺君王权利但深知命宝贵"
)


def en_text(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 6)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 16))]
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + rng.choice([".", ".", "!", "?", ","]))
    return " " + " ".join(sentences)


def zh_text(rng: random.Random) -> str:
    return "".join(
        rng.choice(ZH) + (rng.choice("，。！") if rng.random() < 0.08 else "") for _ in range(rng.randint(30, 120))
    )


def timed(fn) -> tuple[float, list[float]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    args = parser.parse_args()
    sys.setrecursionlimit(20000)
    rng = random.Random(0)
    en = [(en_text(rng).strip(), [en_text(rng).strip() for _ in range(rng.randint(1, 3))]) for _ in range(args.pairs)]
    zh = [(zh_text(rng), [zh_text(rng) for _ in range(rng.randint(1, 3))]) for _ in range(args.pairs)]
    zh_joined = [(" ".join(p), [" ".join(r) for r in refs]) for p, refs in zh]

    scorer, rouge_pkg, rouge_zh = (
        RougeScorer(["rougeL"]),
        RougePkg(metrics=["rouge-l"]),
        RougeChinesePkg(metrics=["rouge-l"]),
    )
    cases = [
        (
            "f1 (en) vs rouge_score",
            lambda: [rouge_l(p, refs, mode="f1") for p, refs in en],
            lambda: [scorer.score_multi(refs, p)["rougeL"].fmeasure for p, refs in en],
        ),
        (
            "paper (en) vs rouge",
            lambda: [rouge_l(p, refs, mode="paper") for p, refs in en],
            lambda: [max(rouge_pkg.get_scores(p, r)[0]["rouge-l"]["r"] for r in refs) for p, refs in en],
        ),
        (
            "paper (zh, char) vs rouge-chinese",
            lambda: [rouge_l(p, refs, mode="paper", lang="zh") for p, refs in zh],
            lambda: [max(rouge_zh.get_scores(p, r)[0]["rouge-l"]["r"] for r in refs) for p, refs in zh_joined],
        ),
    ]
    print(
        f"{args.pairs} pairs per case; {platform.processor() or platform.machine()}; python {platform.python_version()}"
    )
    print(f"{'case':36s} {'ours s':>8s} {'reference s':>12s} {'speed-up':>9s}")
    for name, ours, reference in cases:
        ours_s, ours_out = timed(ours)
        ref_s, ref_out = timed(reference)
        worst = max(abs(a - b) for a, b in zip(ours_out, ref_out, strict=True))
        if worst > 1e-6:
            raise SystemExit(f"{name}: scores differ from the reference by {worst}")
        print(f"{name:36s} {ours_s:8.2f} {ref_s:12.2f} {ref_s / ours_s:8.1f}x")


if __name__ == "__main__":
    main()
