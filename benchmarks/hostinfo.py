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
    src = np.ones(int(gib * 2**30) // 8)
    dst = np.empty_like(src)
    return 2 * src.nbytes / _best_seconds(lambda lo, hi: np.copyto(dst[lo:hi], src[lo:hi]), src.size, threads, repeats)


def bandwidth_readers(gib: float, threads: int = 2, repeats: int = 3):
    """A function that, each time it is called, returns the bytes/s of reading ``gib`` GiB (allocated
    once, here) split over ``threads``, best of ``repeats``, by three numpy readers: what a decode step
    does with its weights. Called between a benchmark's rounds, it reads beside the figure it bounds.
    The readers differ by machine: on a Zen 5 EPYC (2026-12-06) a sum read 33-38 GB/s where max and a
    BLAS dot read 44-55 (and the decode kernel 52), while on the Zen 3 machines of 2026-12-03 the sum
    matched an AVX2 C read loop (21-25 GB/s)."""
    src = np.ones(int(gib * 2**30) // 8)
    readers = {"numpy sum": np.sum, "numpy max": np.max, "BLAS dot": lambda x: np.dot(x, x)}

    def read() -> dict[str, float]:
        return {
            name: src.nbytes / _best_seconds(lambda lo, hi, read=read: read(src[lo:hi]), src.size, threads, repeats)
            for name, read in readers.items()
        }

    return read


def report_bandwidth(gib: float, bound_of: str, more_readers: dict[str, float] | None = None, readers=None) -> float:
    """Print the read rates of ``gib`` GiB (2 threads) by several readers and the copy rate; return the
    fastest read, ``bound_of``'s bound. ``more_readers`` adds rates (bytes/s) measured elsewhere, such
    as a benchmark's own kernel streaming a weight larger than the caches: whatever reads fastest is
    the lower limit of the machine's read bandwidth, so the bound is never one a slow reader set.
    ``readers``: a ``bandwidth_readers(gib)`` function to reuse (else one is made for this reading)."""
    reads = (readers or bandwidth_readers(gib))() | (more_readers or {})
    best = max(reads, key=reads.get)
    listed = ", ".join(f"{name} {rate / 1e9:.1f}" for name, rate in reads.items())
    print(f"read bandwidth (2 threads, {gib:g} GiB): {listed} GB/s; the fastest, {best}, is {bound_of}")
    print(f"  copy (read + write bytes counted) {memory_bandwidth(gib) / 1e9:.1f} GB/s")
    return reads[best]


def _best_seconds(work, n: int, threads: int, repeats: int) -> float:
    """Fastest of ``repeats`` runs of ``work(lo, hi)`` over ``[0, n)`` split into ``threads`` chunks at once."""
    edges = np.linspace(0, n, threads + 1).astype(int)
    best = float("inf")
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda i: work(edges[i], edges[i + 1]), range(threads)))
            best = min(best, time.perf_counter() - start)
    return best
