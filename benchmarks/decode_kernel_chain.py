"""The packed decode kernel alone (issue 17): a chain of 120 GEMM calls on SmolLM2-sized weights
([M, 576] x [576, 1536], 120 distinct weights = 212 MB fp32, more than any L3 here, each call
waiting for the one before as in a decode step), fp32 and bf16 weights, at M rows: weight bytes /
time (the batch-1 figure a decode step can reach at best) and GFLOP/s (what batch 8 needs), with
the vector width of the kernel copy that ran (``--lanes`` asks for a narrower one; in a fresh
process per width, so compare widths in one run of this script).

    python benchmarks/decode_kernel_chain.py [--rows 1 8] [--lanes 16 8 4] [--repeats 10]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

from hostinfo import cpu_line, load_line  # (benchmarks/ is this script's folder)


def chain_rates(rows: int, dtype: str, repeats: int, calls: int = 120, k: int = 576, n: int = 1536) -> tuple:
    import jax
    import jax.numpy as jnp

    from rolellm_jax.models.kernels import cpu_decode_kernels as kernels

    weights = [jax.jit(kernels.pack)(jnp.full((k, n), 0.01, dtype)) for _ in range(calls)]

    @jax.jit
    def chain(x, weights):
        for w in weights:  # each call's input depends on the one before
            x = x + kernels.matmul(x, w, n)[:, :k] * 1e-3
        return x

    x = jnp.ones((rows, k), jnp.float32)
    chain(x, weights).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chain(x, weights).block_until_ready()
        best = min(best, time.perf_counter() - start)
    nbytes = sum(w.nbytes for w in weights)
    return best, nbytes / best, 2 * rows * k * n * calls / best


def one_width(rows: list[int], repeats: int) -> None:
    from rolellm_jax.models.kernels import cpu_decode_kernels as kernels

    if not kernels.available():
        raise SystemExit(f"the kernel is unavailable here: {kernels.unavailable_reason()}")
    for m in rows:
        for dtype in ("float32", "bfloat16"):
            best, bytes_s, flops = chain_rates(m, dtype, repeats)
            print(
                f"| {kernels.vector_lanes()} | {m} | {dtype} | {best * 1e3:.2f} ms | {bytes_s / 1e9:.1f} GB/s "
                f"| {flops / 1e9:.1f} GFLOP/s |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--lanes", type=int, nargs="+", default=[0], help="0: the CPU's widest copy")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--one-width", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one_width:
        return one_width(args.rows, args.repeats)
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {cpu_line()}; {load_line('before')}")
    print("| lanes | rows | weights | 120 calls | weight bytes / s | GFLOP/s |\n|---|---|---|---|---|---|")
    for lanes in args.lanes:
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        if lanes:
            env["ROLELLM_CPU_KERNEL_LANES"] = str(lanes)
        rows = [str(m) for m in args.rows]
        command = [sys.executable, __file__, "--one-width", "--rows", *rows, "--repeats", str(args.repeats)]
        subprocess.run(command, env=env, check=True)
    print(load_line("after"))


if __name__ == "__main__":
    main()
