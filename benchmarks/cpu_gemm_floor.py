"""How fast this CPU's GEMM libraries run the real SmolLM2-135M's dense layers (issue 17): the
floor under a decode step and a LoRA train step, side by side in one run, XLA:CPU (what our model
compiles to) vs torch (what transformers + PEFT run on) vs numpy (OpenBLAS).

Decode: one token per row through the 30 layers' seven projections in order (each GEMM waits for
the one before, as in a decode step) and the tied LM head, at batch 1 and 8: the weights are read
once per step, so weight bytes / time is the rate a decode step can reach at best on that library,
beside the read bandwidth (and the copy figure) measured in the same run. Train: the forward GEMMs of one
8 x 512-token microbatch (every projection shape and the LM head once), in GFLOP/s.

Random weights of the real shapes (the values do not change a GEMM's speed). The jax side calls the
model's own dot (models/kernels/cpu_matmul.py: 16-bit GEMMs ask for a float32 result).

    python benchmarks/cpu_gemm_floor.py [--repeats 5] [--tokens 4096]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from hostinfo import cpu_line, load_line, report_bandwidth  # (benchmarks/ is this script's folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rolellm_jax.models.kernels import cpu_matmul  # noqa: E402

D, F, KV, LAYERS, VOCAB = 576, 1536, 192, 30, 49152
# one layer's projections as the model holds them ([in, out]), in the order a decode step runs them
LAYER = (("q", D, D), ("k", D, KV), ("v", D, KV), ("o", D, D), ("gate", D, F), ("up", D, F), ("down", F, D))


def median_seconds(fn, repeats: int, inner: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return float(np.median(times))


def decode_chain_weights() -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    rng = np.random.default_rng(0)
    layers = [{name: (rng.standard_normal((i, o), np.float32) * 0.02) for name, i, o in LAYER} for _ in range(LAYERS)]
    return layers, rng.standard_normal((VOCAB, D), np.float32) * 0.02


def chain(x, layers, head, matmul, head_matmul):
    """The dependent order of a decode step; the elementwise glue is cheap and keeps every GEMM live."""
    for w in layers:
        q, k, v = matmul(x, w["q"]), matmul(x, w["k"]), matmul(x, w["v"])
        x = x + matmul(q + k.sum(-1, keepdims=True) + v.sum(-1, keepdims=True), w["o"]) * 1e-3
        h = matmul(x, w["gate"]) * matmul(x, w["up"])
        x = x + matmul(h, w["down"]) * 1e-3
    return head_matmul(x, head)


def jax_matmul(x, w):
    """The dense layers' dot as the model's CPU layout runs it (nnx.Linear's dot_general there)."""
    return cpu_matmul.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def jax_head(x, embedding):
    """The tied LM head as the model computes it: the [V, D] embedding read in place, float32 logits."""
    return cpu_matmul.matmul(x, embedding, jnp.float32, transposed=True)


def decode_rows(dtype: str, batches: list[int], repeats: int) -> list[tuple]:
    layers, head = decode_chain_weights()
    dt = jnp.dtype(dtype)
    nbytes = (sum(i * o for _, i, o in LAYER) * LAYERS + VOCAB * D) * dt.itemsize
    rows = []
    fn = jax.jit(lambda x, layers, head: chain(x, layers, head, jax_matmul, jax_head))
    j_layers = jax.tree.map(lambda a: jnp.asarray(a, dt), layers)
    j_head = jnp.asarray(head, dt)
    t_dtype = getattr(torch, dtype)
    t_layers = [{k: torch.from_numpy(a.T.copy()).to(t_dtype) for k, a in w.items()} for w in layers]  # [out, in]
    t_head = torch.from_numpy(head).to(t_dtype)
    linear = torch.nn.functional.linear
    for batch in batches:
        x = np.random.default_rng(1).standard_normal((batch, D), np.float32)
        jx = jnp.asarray(x, dt)
        sides = {"XLA:CPU (jax)": lambda jx=jx: fn(jx, j_layers, j_head).block_until_ready()}
        tx = torch.from_numpy(x).to(t_dtype)

        @torch.inference_mode()
        def torch_run(tx=tx):
            return chain(tx, t_layers, t_head, linear, linear)

        sides["torch (F.linear)"] = torch_run
        if dtype == "float32":
            sides["numpy (OpenBLAS)"] = lambda x=x: chain(x, layers, head, np.matmul, lambda a, e: a @ e.T)
        for side, run in sides.items():
            seconds = median_seconds(run, repeats, inner=5)
            rows.append(("decode", dtype, batch, side, seconds, nbytes / seconds))
    return rows


def train_rows(dtype: str, tokens: int, repeats: int) -> list[tuple]:
    rng = np.random.default_rng(2)
    shapes = [(i, o) for _, i, o in LAYER] + [(D, VOCAB)]
    flops = 2 * tokens * sum(i * o for i, o in shapes)
    x_by_in = {i: rng.standard_normal((tokens, i), np.float32) for i in {i for i, _ in shapes}}
    ws = [rng.standard_normal(s, np.float32) * 0.02 for s in shapes]
    jw = [jnp.asarray(w, dtype) for w in ws]
    jx = {i: jnp.asarray(a, dtype) for i, a in x_by_in.items()}
    jitted = jax.jit(lambda xs, ws: [jax_matmul(xs[w.shape[0]], w) for w in ws])
    t_dtype = getattr(torch, dtype)
    tw = [torch.from_numpy(w.T.copy()).to(t_dtype) for w in ws]
    tx = {i: torch.from_numpy(a).to(t_dtype) for i, a in x_by_in.items()}

    @torch.inference_mode()
    def torch_run():
        return [torch.nn.functional.linear(tx[w.shape[1]], w) for w in tw]

    sides = {
        "XLA:CPU (jax)": lambda: jax.block_until_ready(jitted(jx, jw)),
        "torch (F.linear)": torch_run,
    }
    return [
        ("train", dtype, tokens, side, s, flops / s)
        for side, run in sides.items()
        for s in [median_seconds(run, repeats, inner=1)]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens of the train-step GEMMs (8 x 512)")
    parser.add_argument("--bandwidth-gib", type=float, default=2.0)
    args = parser.parse_args()
    for name in ("repeats", "tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(os.cpu_count())
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu_line()}")
    print(
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
    )
    print(load_line("at the start"))
    bandwidth = report_bandwidth(args.bandwidth_gib, "the decode chains' bound")
    rows = []
    for dtype in ("float32", "bfloat16"):
        rows += decode_rows(dtype, [1, 8], args.repeats)
        rows += train_rows(dtype, args.tokens, args.repeats)
        print(f"  {dtype} done; {load_line()}")
    print("\n| GEMMs | dtype | batch / tokens | library | ms | rate | note |")
    print("|---|---|---|---|---|---|---|")
    for kind, dtype, size, side, seconds, rate in rows:
        if kind == "decode":
            note = f"{rate / bandwidth:.0%} of the read bandwidth; {size / seconds:.1f} tokens/s ceiling"
            print(
                f"| decode chain | {dtype} | {size} | {side} | {seconds * 1e3:.2f} | {rate / 1e9:.1f} GB/s | {note} |"
            )
        else:
            print(f"| train forward | {dtype} | {size} | {side} | {seconds * 1e3:.1f} | {rate / 1e9:.0f} GFLOP/s | |")
    print(load_line("at the end"))


if __name__ == "__main__":
    main()
