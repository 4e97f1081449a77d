"""What goes through the LLM client: requests, results, usage, the client's errors, and the request key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from data_gen.errors import UserError

Messages = list[dict[str, str]]


class LLMError(UserError):
    """Base class of the client's errors; the message is one line fit for a CLI."""


class AuthError(LLMError):
    """The endpoint rejected the API key (401/403): the run stops at once, nothing is retried."""


class EndpointUnreachableError(LLMError):
    """No server answered (connection refused, host not resolved, no connection): the run stops;
    those requests are not journaled, so a plain rerun asks them once the server is up."""


class OfflineMissError(LLMError):
    """Offline replay asked for a request that the journal does not hold."""


class BudgetExceededError(LLMError):
    """Sending the next request could exceed ``max_cost``; everything done so far is journaled."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make. ``params`` are the sampling params sent to the API
    (temperature, top_p, max_tokens, seed, ...); ``sample_index`` tells apart repeated samples."""

    messages: Messages
    params: dict[str, Any] = field(default_factory=dict)
    sample_index: int = 0


@dataclass(frozen=True)
class ChatResult:
    """The journaled outcome of a request. ``error`` is set (and ``text`` empty) for a request
    that kept failing; ``cached`` says it came from the journal without a new API call."""

    key: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Usage:
    """Totals over the results a caller used (journal hits included, so they are reproducible)."""

    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def add(self, r: ChatResult) -> None:
        self.requests += 1
        self.failed += 0 if r.ok else 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost += r.cost

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost, 6),
        }


def request_key(model: str, messages: Messages, params: dict[str, Any], sample_index: int) -> str:
    """sha256 of the canonical JSON of everything that determines the answer's distribution."""
    blob = json.dumps(
        {"model": model, "messages": messages, "params": params, "sample_index": sample_index},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def estimate_tokens(text: str) -> int:
    """Cheap upper-ish token estimate without a tokenizer: ~4 chars per token for Latin text,
    one token per CJK character."""
    cjk = sum(1 for ch in text if "\u3000" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk + (len(text) - cjk) // 4 + 1


def usage_of(results: Iterable[ChatResult]) -> Usage:
    """Totals over distinct requests (a request used twice was paid once). Journal hits count, so
    the totals of a resumed run equal those of an uninterrupted one."""
    u = Usage()
    seen: set[str] = set()
    for r in results:
        if r.key not in seen:
            seen.add(r.key)
            u.add(r)
    return u
