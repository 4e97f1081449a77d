"""The LLM endpoint's command-line flags and the client built from them, shared by every data_gen
stage and by ``python -m rolellm_jax.evaluate judge``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_llm_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM endpoint")
    g.add_argument("--base-url", default=None, help="OpenAI-compatible base URL (default: $OPENAI_BASE_URL)")
    g.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY (prefer the variable)")
    g.add_argument("--offline", action="store_true", help="replay from the journal only; fail on a miss")
    g.add_argument("--concurrency", type=int, default=16)
    g.add_argument("--rpm", type=float, default=None, help="requests per minute limit")
    g.add_argument("--tpm", type=float, default=None, help="tokens per minute limit")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per attempt")
    g.add_argument("--max-retries", type=int, default=6)
    g.add_argument("--backoff-base", type=float, default=1.0, help="first retry waits up to this (s), doubling")
    g.add_argument("--max-cost", type=float, default=None, help="USD budget for new requests of this run")
    g.add_argument("--retry-failed", action="store_true", help="re-ask requests journaled as failed")
    g.add_argument("--prices", type=Path, default=None, help="price table JSON (default: data_gen/llm/prices.json)")
    g.add_argument("--no-progress", action="store_true")


def client_from_args(args: argparse.Namespace, model: str, journal_path: str | Path):
    """An LLMClient configured by the flags of :func:`add_llm_flags`."""
    from data_gen.llm.client import LLMClient
    from data_gen.llm.limits import PriceTable

    return LLMClient(
        model,
        journal_path=journal_path,
        base_url=args.base_url,
        api_key=args.api_key,
        offline=args.offline,
        concurrency=args.concurrency,
        rpm=args.rpm,
        tpm=args.tpm,
        timeout=args.timeout,
        max_retries=args.max_retries,
        backoff_base=args.backoff_base,
        max_cost=args.max_cost,
        prices=PriceTable.load(args.prices) if args.prices else None,
        retry_failed=args.retry_failed,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
