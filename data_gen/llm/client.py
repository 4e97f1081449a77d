"""The one LLM client of the project: OpenAI-compatible chat calls with limits, retries, a durable
journal and cost accounting. Used by every data_gen stage and by the evaluation judge.

Guarantees (this is where real money is spent):
- every response is committed to a SQLite (WAL) journal keyed by sha256(model, messages, sampling
  params, sample index) as soon as it is parsed, before it is returned or anything else runs on
  the event loop. A run killed at any moment (SIGKILL included) loses at most the requests in
  flight at the kill (at most ``concurrency``: sent, or answered by the server but not yet
  committed); a rerun pays again for exactly those, nothing else, and ends with exactly the output
  of an uninterrupted run (tests/data_gen/test_kill_resume.py kills builds at random points);
- ``offline=True`` replays from the journal only and raises :class:`OfflineMissError` on a miss;
- concurrency, requests-per-minute and tokens-per-minute limits; retries with exponential backoff
  and jitter on 429 / 5xx / timeouts / connection errors, honouring ``Retry-After``; a request that
  keeps failing is journaled as failed (with its error) and the run goes on;
- a rejected key (HTTP 401/403) stops at once with :class:`AuthError`, never retried;
- an endpoint that refuses the connection or whose host does not resolve stops the run at once
  with :class:`EndpointUnreachableError` saying so (other connection failures are retried first);
  a request that never reached a server is not journaled, so a plain rerun asks it again. Only
  answers a server gave (a 400, a content-filter refusal, a 500 after the retries) are journaled
  as failed;
- ``max_cost`` (USD) is checked *before* sending, against a worst-case estimate of the request, so
  a run stops cleanly (:class:`BudgetExceededError`) before exceeding it;
- the API key is never logged, journaled or returned in an error message.

Typical use::

    client = LLMClient("gpt-4o-mini", journal_path="work/journal.sqlite", concurrency=32)
    results = client.run_many([ChatRequest(messages, {"temperature": 0.7}, i) for i in range(6)],
                              stage="rolegpt")
    client.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai

from data_gen.llm.journal import Journal
from data_gen.llm.limits import (
    PriceTable,
    RateLimiter,
    connection_limits,
    is_retryable,
    retry_after_seconds,
    unreached_reason,
    usd,
)
from data_gen.llm.types import (
    AuthError,
    BudgetExceededError,
    ChatRequest,
    ChatResult,
    EndpointUnreachableError,
    LLMError,
    Messages,
    OfflineMissError,
    estimate_tokens,
    request_key,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- client
class LLMClient:
    """Async chat client over ``openai.AsyncOpenAI`` (any OpenAI-compatible endpoint).

    Args:
      model: model name sent to the endpoint (and part of every journal key).
      journal_path: the SQLite journal; required (it is what makes runs resumable).
      base_url / api_key: default to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
      offline: replay from the journal only; no endpoint or key needed.
      concurrency: requests in flight at once. rpm / tpm: per-minute limits (None = unlimited).
      timeout: seconds per attempt. max_retries: retries after the first attempt.
      backoff_base / backoff_max: exponential backoff (full jitter) bounds in seconds.
      max_cost: USD budget for *new* requests of this client (journal hits are free).
      retry_failed: re-ask requests the journal holds as failed (default: replay the failure, so
        reruns are reproducible).
      progress: show a tqdm bar per ``run_many`` call (ETA, rate, failures, money).
    """

    def __init__(
        self,
        model: str,
        *,
        journal_path: str | Path,
        base_url: str | None = None,
        api_key: str | None = None,
        offline: bool = False,
        concurrency: int = 16,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_cost: float | None = None,
        prices: PriceTable | None = None,
        retry_failed: bool = False,
        progress: bool = False,
    ):
        self.model = model
        self.offline = offline
        self.concurrency = concurrency
        self.rpm, self.tpm = rpm, tpm
        self.max_retries = max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_cost = max_cost
        self.prices = prices or PriceTable.load()
        self.retry_failed = retry_failed
        self.progress = progress
        self.timeout = timeout
        if offline and not Path(journal_path).is_file():  # replaying needs an earlier run's journal
            raise OfflineMissError(
                f"{journal_path}: no journal to replay (--offline only reuses answers already paid for)"
            )
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if not offline and not self._api_key:  # checked before the journal exists: a failed start leaves none
            raise LLMError(
                "no API key: set OPENAI_API_KEY or pass --api-key (any string for a local server), "
                "or use --offline to replay the journal"
            )
        self.journal = Journal(journal_path)
        self.spent = 0.0  # USD of new requests made by this client
        self.new_requests = 0  # API calls that returned (successfully or not), retries excluded
        self.attempts = 0  # every HTTP attempt, retries included
        self.retries = 0
        self._reserved = 0.0  # worst-case USD of requests in flight
        self._fatal: LLMError | None = None
        self._state: _Limits | None = None
        self._sleep = asyncio.sleep  # tests swap this to observe backoff delays

    # The key lives only in this attribute and the openai client; repr never shows it.
    def __repr__(self) -> str:
        return f"LLMClient(model={self.model!r}, base_url={self.base_url!r}, offline={self.offline})"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def key_for(self, req: ChatRequest) -> str:
        return request_key(self.model, req.messages, req.params, req.sample_index)

    # -------------------------------------------------------------------------- one request
    async def _call(self, api: openai.AsyncOpenAI | None, req: ChatRequest, limits: _Limits) -> ChatResult:
        key = self.key_for(req)
        hit = self.journal.get(key)
        if hit is not None and (hit.ok or not self.retry_failed):
            return hit
        # The same request already in flight (identical prompts in one batch): share its answer
        # instead of paying twice.
        if (pending := limits.inflight.get(key)) is not None:
            r = await asyncio.shield(pending)
            return dataclasses.replace(r, cached=True)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" noise
        limits.inflight[key] = fut
        try:
            result = await self._fetch(api, req, key, limits)
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else LLMError("request cancelled"))
            raise
        finally:
            del limits.inflight[key]
        fut.set_result(result)
        return result

    async def _fetch(self, api: openai.AsyncOpenAI | None, req: ChatRequest, key: str, limits: _Limits) -> ChatResult:
        if self.offline:
            raise OfflineMissError(
                f"offline replay: journal {self.journal.path} has no answer for request "
                f"{key[:16]} (model {self.model}); run once online to record it"
            )
        est_prompt = estimate_tokens(json.dumps(req.messages, ensure_ascii=False))
        est_completion = int(req.params.get("max_tokens") or 1024)
        worst = self.prices.cost(self.model, est_prompt, est_completion)
        async with limits.sem:
            if self._fatal is not None:
                raise self._fatal
            if self.max_cost is not None and self.spent + self._reserved + worst > self.max_cost:
                raise BudgetExceededError(
                    f"budget reached: spent {usd(self.spent)} of --max-cost {usd(self.max_cost)}, "
                    f"{usd(self._reserved)} more is reserved for the requests in flight (each at its worst case) "
                    f"and the next could cost up to {usd(worst)}. Everything so far is journaled: rerun with a "
                    "higher --max-cost"
                )
            self._reserved += worst
            try:
                result = await self._attempts(api, req, key, limits, est_prompt + est_completion)
            finally:
                self._reserved -= worst
        self.spent += result.cost
        self.new_requests += 1
        # Committed before use: a kill after this line never pays for this request again.
        self.journal.put(
            self.model, {"messages": req.messages, "params": req.params, "sample_index": req.sample_index}, result
        )
        return result

    async def _attempts(
        self, api: openai.AsyncOpenAI, req: ChatRequest, key: str, limits: _Limits, est_tokens: int
    ) -> ChatResult:
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if limits.rpm:
                await limits.rpm.acquire(1)
            if limits.tpm:
                await limits.tpm.acquire(est_tokens)
            self.attempts += 1
            try:
                resp = await api.chat.completions.create(model=self.model, messages=req.messages, **req.params)
                choice = resp.choices[0]
                usage = resp.usage
                pt = usage.prompt_tokens if usage else 0
                ct = usage.completion_tokens if usage else 0
                return ChatResult(
                    key,
                    choice.message.content or "",
                    choice.finish_reason,
                    pt,
                    ct,
                    self.prices.cost(self.model, pt, ct),
                )
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                self._fatal = AuthError(
                    f"endpoint {self.base_url or 'api.openai.com'} rejected the API key (HTTP {e.status_code}); "
                    "check OPENAI_API_KEY / --api-key. Stopped without retrying"
                )
                raise self._fatal from None
            except Exception as e:  # noqa: BLE001 - classified below; anything else is a failure
                last_error = self._redact(f"{type(e).__name__}: {e}")[:500]
                unreached = unreached_reason(e)
                if unreached is not None and (unreached[1] or attempt == self.max_retries):
                    if self._fatal is None:
                        self._fatal = EndpointUnreachableError(
                            f"endpoint {self.base_url or 'https://api.openai.com/v1'} {unreached[0]}; the "
                            f"requests not sent are not journaled: rerun once it answers"
                        )
                    raise self._fatal from None
                if not is_retryable(e) or attempt == self.max_retries:
                    break
                self.retries += 1
                delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
                retry_after = retry_after_seconds(e)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.backoff_max))
                log.info("retry %d/%d in %.2fs after %s", attempt + 1, self.max_retries, delay, last_error)
                await self._sleep(delay)
        log.warning("request %s failed for good: %s", key[:16], last_error)
        return ChatResult(key, "", None, 0, 0, 0.0, error=last_error)

    # ------------------------------------------------------------------------------ batches
    def _loop_state(self) -> _Limits:
        """Limits and the HTTP client of the running event loop (asyncio objects are per loop),
        shared by every call on that loop so concurrency and rate limits hold across callers."""
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            self._state = _Limits(self, loop)
        return self._state

    async def chat_many(self, requests: Sequence[ChatRequest], stage: str | None = None) -> list[ChatResult]:
        """Run requests concurrently; results in request order. Journal hits cost nothing. An
        AuthError, OfflineMissError or EndpointUnreachableError is raised as soon as it happens;
        BudgetExceededError is raised after the requests already in flight have finished (and
        been journaled).

        ``concurrency`` workers take the requests in order (not one task per request): a run of
        850k requests starts sending at once, and no backlog of other work ever stands between an
        answer's arrival and its commit to the journal."""
        limits = self._loop_state()
        bar = _bar(len(requests), stage, self.progress) if stage else None
        failed = 0
        results: list[ChatResult | None] = [None] * len(requests)
        todo = iter(enumerate(requests))  # shared: each request is taken by exactly one worker
        budget: BudgetExceededError | None = None

        async def worker() -> None:
            nonlocal failed, budget
            for i, req in todo:
                try:
                    r = await self._call(limits.api, req, limits)
                except BudgetExceededError as e:
                    budget = budget or e
                    continue
                if r.cached:
                    await asyncio.sleep(0)  # a journal hit never yields: let arrived answers be committed
                results[i] = r
                failed += 0 if r.ok else 1
                if bar is not None:
                    bar.set_postfix_str(f"failed={failed} {usd(self.spent)}", refresh=False)
                    bar.update(1)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(requests)))]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION) if workers else ((), ())
            for w in done:
                if w.exception() is not None:
                    raise w.exception()
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        if budget is not None:
            raise budget
        return results  # type: ignore[return-value]

    async def chat(self, messages: Messages, *, sample_index: int = 0, **params: Any) -> ChatResult:
        """One request (e.g. a judge call). Concurrent ``chat`` calls on one event loop share the
        concurrency and rate limits."""
        return (await self.chat_many([ChatRequest(messages, params, sample_index)]))[0]

    def run_many(self, requests: Sequence[ChatRequest], stage: str | None = None) -> list[ChatResult]:
        """Synchronous wrapper of :meth:`chat_many` (its own event loop, closed afterwards)."""

        async def go() -> list[ChatResult]:
            try:
                return await self.chat_many(list(requests), stage)
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (the journal stays open)."""
        if self._state is not None and self._state.api is not None:
            await self._state.api.close()
        self._state = None

    def close(self) -> None:
        self.journal.close()


class _Limits:
    """Per-event-loop primitives (asyncio objects must not cross event loops)."""

    def __init__(self, client: LLMClient, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        # openai's aiohttp transport (openai[aiohttp]): the one openai offers for high concurrency;
        # it needs ~20% less CPU per request than the default httpx one, and CPU per request is
        # what caps requests/s at concurrency 64 (see benchmarks/llm_client_throughput.py).
        self.api = (
            None
            if client.offline
            else openai.AsyncOpenAI(
                api_key=client._api_key,
                base_url=client.base_url,
                max_retries=0,
                timeout=client.timeout,
                http_client=openai.DefaultAioHttpClient(limits=connection_limits(client.concurrency)),
            )
        )
        self.sem = asyncio.Semaphore(client.concurrency)
        self.inflight: dict[str, asyncio.Future] = {}
        self.rpm = RateLimiter(client.rpm) if client.rpm else None
        self.tpm = RateLimiter(client.tpm) if client.tpm else None


def _bar(total: int, stage: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=stage, unit="req", dynamic_ncols=True)
