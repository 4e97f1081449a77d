"""Prices, rate limits and which errors are worth a retry."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import socket
import time
from importlib import resources
from pathlib import Path

import openai

from data_gen.files import read_json_object

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- prices
def usd(amount: float) -> str:
    """Dollars with enough digits to tell small amounts apart: $1.2500, $0.0123, $0.000123, $0 (never $0.0000)."""
    if amount == 0:
        return "$0"
    if abs(amount) >= 0.01:
        return f"${amount:.4f}"
    return f"${amount:.{2 - math.floor(math.log10(abs(amount)))}f}"


class PriceTable:
    """USD per million tokens by model, from ``data_gen/prices.json`` (or a given JSON file).
    A model is matched exactly, else by the longest table entry that prefixes it; unknown models
    cost 0 (local servers) and a warning is logged once."""

    def __init__(self, table: dict[str, dict[str, float]]):
        self.table = table
        self._warned: set[str] = set()

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        if path is None:
            data = json.loads(resources.files("data_gen.llm").joinpath("prices.json").read_text(encoding="utf-8"))
        else:
            data = read_json_object(path, "a JSON object: model -> {input, output} USD per million tokens")
        return cls({k: v for k, v in data.items() if not k.startswith("_")})

    def rates(self, model: str) -> tuple[float, float]:
        entry = self.table.get(model)
        if entry is None:
            prefixes = [k for k in self.table if model.startswith(k)]
            entry = self.table[max(prefixes, key=len)] if prefixes else None
        if entry is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model %r in the price table: counted as free", model)
            return 0.0, 0.0
        return float(entry["input"]), float(entry["output"])

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        rin, rout = self.rates(model)
        return (prompt_tokens * rin + completion_tokens * rout) / 1e6


# ------------------------------------------------------------------------------------- limiters
class RateLimiter:
    """Token bucket refilled continuously at ``per_minute / 60`` per second, holding at most one
    minute's worth. ``acquire(n)`` waits until n units are available (n is capped at capacity)."""

    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self, n: float = 1.0) -> None:
        n = min(float(n), self.capacity)
        async with self.lock:  # FIFO: one waiter at a time drains the bucket
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= n:
                    self.level -= n
                    return
                await asyncio.sleep((n - self.level) / self.rate)


def retry_after_seconds(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    if response is None:
        return None
    headers = response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _names(err: BaseException) -> set[str]:
    return {c.__name__ for c in type(err).__mro__}


def _chain(err: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while err is not None and all(err is not e for e in out):
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def unreached_reason(err: Exception) -> tuple[str, bool] | None:
    """(why, final) when a request never reached a server, else None (the server answered, if
    only with an error). final: retrying cannot help soon (connection refused, name not resolved).
    openai reports all of these as 'Request timed out.'; the cause is in the exception chain."""
    chain = _chain(err)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused the connection (is the server running and listening on that host and port?)", True
    if any(isinstance(e, socket.gaierror) or type(e).__name__ == "ClientConnectorDNSError" for e in chain):
        return "could not be resolved (check the host name in --base-url / OPENAI_BASE_URL)", True
    # openai's aiohttp transport maps every aiohttp connection error (a server dropping the
    # connection after the request too) to ConnectTimeout: where aiohttp's own error is in the
    # chain, only its "could not connect" counts as unreached; else httpx's connect errors do.
    aio = [e for e in chain if type(e).__module__.startswith("aiohttp")]
    connect = ("ClientConnectorError",) if aio else ("ConnectError", "ConnectTimeout")
    if any(_names(e) & set(connect) for e in aio or chain):
        return "could not be connected to (network error before any answer)", False
    return None


def is_retryable(err: Exception) -> bool:
    if isinstance(
        err,
        (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError),
    ):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in (408, 409, 429) or err.status_code >= 500
    return False


def connection_limits(concurrency: int):
    """openai's connection limits with a keep-alive pool as large as the concurrency (the aiohttp
    transport's own default keeps 20 and caps connections at 100)."""
    limits = openai.DEFAULT_CONNECTION_LIMITS
    return type(limits)(
        max_connections=max(limits.max_connections, concurrency),
        max_keepalive_connections=max(limits.max_keepalive_connections, concurrency),
        keepalive_expiry=limits.keepalive_expiry,
    )
