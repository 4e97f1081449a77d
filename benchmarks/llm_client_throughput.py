"""LLMClient throughput against a local OpenAI-compatible server with fixed latency.

The bound is concurrency / latency requests per second (e.g. 64 / 0.2 s = 320 req/s). Side by side
in one run: the obvious alternative, a bare ``openai.AsyncOpenAI`` (default httpx transport) +
asyncio.Semaphore + gather (no journal, limits or accounting). LLMClient uses openai's aiohttp
transport, so the difference is that transport's CPU saving minus the journal and bookkeeping.

Each line also gives the client's CPU time per request and the cores other processes kept busy
meanwhile: the client is one event loop, and on a shared 2-core machine its CPU per request
(~1.8 ms with aiohttp, ~2.3 ms with httpx) and other load decide how far below the bound it stays.

    python benchmarks/llm_client_throughput.py --concurrency 64 --latency 0.2 --requests 1280
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from data_gen.llm.client import LLMClient
from data_gen.llm.types import ChatRequest  # noqa: E402

KEY = "sk-bench"


class CpuMeter:
    """Client CPU time (this process) and busy cores of every other process (Linux /proc/stat,
    minus this process and the server) over a measured span."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def _sample(self) -> tuple[float, float, float, float]:
        tick = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            with open(f"/proc/{self.server_pid}/stat") as f:
                p = f.read().rsplit(")", 1)[1].split()
            busy, server = (sum(v) - v[3] - v[4]) / tick, (int(p[11]) + int(p[12])) / tick
        except OSError:  # not Linux
            busy = server = float("nan")
        return time.perf_counter(), time.process_time(), busy, server

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        wall, client, busy, server = (b - a for a, b in zip(self.start, self._sample()))
        self.client_cpu = client
        self.others_cores = max(0.0, (busy - client - server) / wall)  # clock ticks round to 0.01 s


def requests(n: int, tag: str) -> list[ChatRequest]:
    return [
        ChatRequest([{"role": "user", "content": f"{tag} request {i}"}], {"temperature": 0.0, "max_tokens": 16})
        for i in range(n)
    ]


def bench_llm_client(base_url: str, n: int, concurrency: int, meter: CpuMeter) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(
            "bench-model",
            journal_path=Path(tmp) / "journal.sqlite",
            base_url=base_url,
            api_key=KEY,
            concurrency=concurrency,
            max_retries=0,
        )
        reqs = requests(n, "client")
        with meter:
            t = time.perf_counter()
            results = client.run_many(reqs)
            elapsed = time.perf_counter() - t
        assert all(r.ok for r in results) and len(client.journal) == n
        client.close()
    return n / elapsed


def bench_bare_openai(base_url: str, n: int, concurrency: int, meter: CpuMeter) -> float:
    async def go() -> float:
        api = openai.AsyncOpenAI(api_key=KEY, base_url=base_url, max_retries=0)
        sem = asyncio.Semaphore(concurrency)

        async def one(r: ChatRequest) -> None:
            async with sem:
                await api.chat.completions.create(model="bench-model", messages=r.messages, **r.params)

        reqs = requests(n, "bare")
        with meter:
            t = time.perf_counter()
            await asyncio.gather(*(one(r) for r in reqs))
            elapsed = time.perf_counter() - t
        await api.close()
        return n / elapsed

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--requests", type=int, default=1280)
    args = ap.parse_args()
    logging.getLogger("data_gen.llm").setLevel(logging.ERROR)  # "no price for bench-model"
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parent.parent / "tests" / "fake_openai_server.py"),
            "--latency",
            str(args.latency),
            "--key",
            KEY,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        bare_meter, ours_meter = CpuMeter(server.pid), CpuMeter(server.pid)
        bench_bare_openai(base_url, args.concurrency, args.concurrency, bare_meter)  # warm-up (imports, connections)
        bound = args.concurrency / args.latency
        bare = bench_bare_openai(base_url, args.requests, args.concurrency, bare_meter)
        ours = bench_llm_client(base_url, args.requests, args.concurrency, ours_meter)
    finally:
        server.terminate()
        server.wait()
    print(
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()} x{os.cpu_count()}, load average {load:.2f}, "
        f"python {platform.python_version()}, openai {openai.__version__}"
    )
    print(
        f"concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms, {args.requests} requests, "
        f"bound {bound:.0f} req/s"
    )
    for name, rate, m in (
        ("bare AsyncOpenAI + semaphore", bare, bare_meter),
        ("LLMClient (journal, limits) ", ours, ours_meter),
    ):
        print(
            f"{name} : {rate:7.1f} req/s  ({100 * rate / bound:5.1f}% of bound)  client CPU "
            f"{1000 * m.client_cpu / args.requests:.2f} ms/request, other processes {m.others_cores:.2f} cores busy"
        )


if __name__ == "__main__":
    main()
