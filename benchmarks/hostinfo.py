"""What the benchmarks print about the machine: CPU model, its matmul features, the load average.

The CPU figures of benchmarks/RESULTS.md come from shared 2-core machines: the load average next to
a figure says how much of the machine other processes had while it was measured.
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import time
from pathlib import Path

import numpy as np

# the lscpu / /proc/cpuinfo flags that decide which matmul kernels XLA, oneDNN and ggml can use
MATMUL_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """(model name, the MATMUL_FLAGS this CPU has) from /proc/cpuinfo (Linux; elsewhere the platform name)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return model or platform.machine(), [f for f in MATMUL_FLAGS if f in flags]


def cpu_line() -> str:
    model, flags = cpu_model_and_flags()
    return f"CPU: {model}, {os.cpu_count()} cpus, matmul features: {' '.join(flags) or 'none of ' + str(MATMUL_FLAGS)}"


def load_line(what: str = "") -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average{' ' + what if what else ''}: {one:.2f} {five:.2f} {fifteen:.2f}"


def memory_bandwidth(gib: float, threads: int = 2, repeats: int = 3) -> float:
    """Bytes/s of a numpy copy split over ``threads`` (numpy releases the GIL), best of ``repeats``."""
    n = int(gib * 2**30) // 8
    src, dst = np.ones(n), np.empty(n)
    chunks = np.array_split(np.arange(n), threads)
    bounds = [(int(c[0]), int(c[-1]) + 1) for c in chunks]
    best = float("inf")
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda b: np.copyto(dst[b[0] : b[1]], src[b[0] : b[1]]), bounds))
            best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best
