"""Decode throughput (new tokens/s): rolellm_jax.generate vs transformers `generate`, same weights.

A random LLaMA (about 30M parameters by default) is saved as an HF folder, loaded into ours with
`rolellm_jax.load_model`, and both sides generate greedily for the same left-padded batch of
prompts with mixed lengths (no EOS, so every row produces --new tokens). Our compile time is
reported apart (it is paid once per shape); each side is timed over --repeats runs, best kept.

    python benchmarks/decode_throughput.py [--batch 8] [--prompt 64] [--new 128] [--layers 8]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from rolellm_jax import load_model  # noqa: E402
from rolellm_jax.inference.generate import SamplingConfig, generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64, help="longest prompt; rows range from half of it to it")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    hf_cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 128,
        max_position_embeddings=2048,
        eos_token_id=None,
        bos_token_id=None,
        pad_token_id=0,
    )
    hf = LlamaForCausalLM(hf_cfg).eval().float()
    params = sum(p.numel() for p in hf.parameters())
    rng = np.random.default_rng(0)
    prompts = [
        rng.integers(3, args.vocab, size=int(n)).tolist()
        for n in np.linspace(args.prompt // 2, args.prompt, args.batch)
    ]

    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model, _ = load_model(folder, dtype="float32", param_dtype="float32")

    sampling = SamplingConfig(max_new_tokens=args.new, pad_token_id=0)
    start = time.perf_counter()
    ours = generate(model, prompts, sampling, batch_size=args.batch, length_multiple=args.prompt)
    compile_s = time.perf_counter() - start
    ours_s = min(
        _timed(lambda: generate(model, prompts, sampling, batch_size=args.batch, length_multiple=args.prompt))
        for _ in range(args.repeats)
    )

    width = args.prompt
    ids = torch.zeros((args.batch, width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1

    def hf_run():
        with torch.no_grad():
            return hf.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=args.new, do_sample=False, pad_token_id=0
            )

    theirs = hf_run()[:, width:].tolist()
    hf_s = min(_timed(hf_run) for _ in range(args.repeats))

    tokens = args.batch * args.new
    same = np.mean([a == b for a, b in zip(ours, theirs, strict=True)])
    print(
        f"{datetime.date.today()} {platform.machine()} {os.cpu_count()} cpus, "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"model {params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}), "
        f"batch {args.batch}, prompts {args.prompt // 2}-{args.prompt}, {args.new} new tokens"
    )
    print(
        f"rolellm_jax.generate : {tokens / ours_s:9.1f} tok/s "
        f"({ours_s:.2f} s; first call with compile {compile_s:.2f} s)"
    )
    print(f"transformers generate: {tokens / hf_s:9.1f} tok/s ({hf_s:.2f} s)")
    print(f"speed-up {hf_s / ours_s:.2f}x; rows with identical greedy tokens: {same:.0%}")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
