"""LLMClient against a local OpenAI-compatible server: journal, retries, faults, auth, budget, secrets."""

import asyncio
import logging

import pytest

from data_gen.llm.client import LLMClient
from data_gen.llm.limits import PriceTable, RateLimiter
from data_gen.llm.types import AuthError, BudgetExceededError, ChatRequest, OfflineMissError, request_key
from tests.helpers.fake_openai_server import FakeOpenAIServer, hash_faults

KEY = "sk-test-key"


def reqs(n, tag="q"):
    return [
        ChatRequest([{"role": "user", "content": f"{tag} {i}"}], {"temperature": 0.0, "max_tokens": 50}, 0)
        for i in range(n)
    ]


def client(srv, tmp_path, **kw):
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 5.0)
    return LLMClient(
        "fake-model",
        journal_path=tmp_path / "journal.sqlite",
        base_url=srv.base_url,
        api_key=kw.pop("api_key", KEY),
        **kw,
    )


def test_request_key_covers_model_messages_params_sample():
    m = [{"role": "user", "content": "hi"}]
    base = request_key("a", m, {"temperature": 0.7}, 0)
    assert base == request_key("a", [{"content": "hi", "role": "user"}], {"temperature": 0.7}, 0)
    assert (
        len(
            {
                base,
                request_key("b", m, {"temperature": 0.7}, 0),
                request_key("a", m, {"temperature": 0.8}, 0),
                request_key("a", m, {"temperature": 0.7}, 1),
                request_key("a", [{"role": "user", "content": "hi!"}], {"temperature": 0.7}, 0),
            }
        )
        == 5
    )


def test_journal_replays_without_new_requests_and_offline(tmp_path):
    with FakeOpenAIServer() as srv:
        c = client(srv, tmp_path)
        first = c.run_many(reqs(10))
        assert [r.text for r in first] == [f"ok: q {i}" for i in range(10)]
        assert not any(r.cached for r in first)
        assert sum(srv.successes.values()) == 10
        again = c.run_many(reqs(10))
        assert [r.text for r in again] == [r.text for r in first] and all(r.cached for r in again)
        assert sum(srv.attempts.values()) == 10  # nothing re-asked
        c.close()
    # offline: no server, no key; a hit replays, a miss fails clearly
    off = LLMClient("fake-model", journal_path=tmp_path / "journal.sqlite", offline=True, api_key=None)
    assert [r.text for r in off.run_many(reqs(10))] == [r.text for r in first]
    with pytest.raises(OfflineMissError, match="no answer for request"):
        off.run_many(reqs(11))
    off.close()
    # a journal that is not there is said as such, and nothing is created in its place
    missing = tmp_path / "elsewhere" / "journal.sqlite"
    with pytest.raises(OfflineMissError, match=r"elsewhere/journal.sqlite: no journal to replay"):
        LLMClient("fake-model", journal_path=missing, offline=True, api_key=None)
    assert not missing.parent.exists()


def test_cost_from_usage_and_price_table(tmp_path):
    with FakeOpenAIServer() as srv:
        c = client(srv, tmp_path)
        (r,) = c.run_many(reqs(1))
        # fake server: prompt tokens = words of the prompt (2), completion = words of "ok: q 0" (3)
        assert (r.prompt_tokens, r.completion_tokens) == (2, 3)
        assert r.cost == pytest.approx((2 * 1.0 + 3 * 2.0) / 1e6)
        assert PriceTable.load().rates("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
        c.close()


def test_retries_429_honours_retry_after_500_hang_malformed(tmp_path):
    plan = {0: "429", 1: "500", 2: "hang", 3: "malformed"}
    faults = lambda key, attempt: plan.get(order.index(key)) if attempt == 1 and key in order else None  # noqa: E731
    order: list[str] = []
    import tests.helpers.fake_openai_server as f

    with FakeOpenAIServer(fault_plan=faults, retry_after="7", hang_seconds=3.0) as srv:
        rs = reqs(5)
        for r in rs:  # the server sees the body: compute its key the way the server does
            order.append(f.body_key({"model": "fake-model", "messages": r.messages, **r.params}))
        c = client(srv, tmp_path, timeout=1.5, backoff_max=30.0)
        delays = []

        async def record(d):
            delays.append(d)

        c._sleep = record
        out = c.run_many(rs)
        assert all(r.ok for r in out), [r.error for r in out]
        assert [srv.attempts[k] for k in order] == [2, 2, 2, 2, 1]
        assert [srv.successes[k] for k in order] == [1, 1, 1, 1, 1]
        assert c.retries == 4 and 7.0 in delays  # Retry-After: 7 was honoured
        c.close()


def test_persistent_failure_is_recorded_and_run_goes_on(tmp_path):
    bad = "q 3"
    import tests.helpers.fake_openai_server as f

    bad_key = f.body_key(
        {"model": "fake-model", "messages": [{"role": "user", "content": bad}], "temperature": 0.0, "max_tokens": 50}
    )
    with FakeOpenAIServer(fault_plan=lambda k, a: "500" if k == bad_key else None) as srv:
        c = client(srv, tmp_path, max_retries=2)
        out = c.run_many(reqs(6))
        assert [r.ok for r in out] == [True, True, True, False, True, True]
        assert "InternalServerError" in out[3].error and srv.attempts[bad_key] == 3
        # replayed as failed (reproducible), unless asked to retry failures
        assert not c.run_many(reqs(6))[3].ok and srv.attempts[bad_key] == 3
        c.retry_failed = True
        c.run_many(reqs(6))
        assert srv.attempts[bad_key] == 6
        c.close()


def test_rejected_key_stops_at_once(tmp_path):
    with FakeOpenAIServer(keys=("sk-good",)) as srv:
        c = client(srv, tmp_path, api_key="sk-wrong-SECRET-123", concurrency=2)
        with pytest.raises(AuthError, match="rejected the API key") as e:
            c.run_many(reqs(20))
        assert "SECRET" not in str(e.value)
        assert srv.auth_rejections <= 2  # the two in flight at most; no retries, no further requests
        assert len(c.journal) == 0
        c.close()


def test_max_cost_stops_before_exceeding(tmp_path):
    # worst case per request here: ~10 prompt tokens * 1e-6 + 50 max_tokens * 2e-6 = ~1.1e-4 USD
    with FakeOpenAIServer() as srv:
        c = client(srv, tmp_path, max_cost=5e-4, concurrency=1)
        with pytest.raises(BudgetExceededError, match="budget reached"):
            c.run_many(reqs(50))
        assert 0 < c.spent <= 5e-4
        done = len(c.journal)
        assert 0 < done < 50 and sum(srv.successes.values()) == done
        c.max_cost = None  # resume with more budget: only the rest is paid for
        assert all(r.ok for r in c.run_many(reqs(50)))
        assert sum(srv.successes.values()) == 50
        c.close()


def test_api_key_never_in_logs_or_journal(tmp_path, caplog):
    secret = "sk-live-DO-NOT-LEAK-0123456789"
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(keys=(secret,), fault_plan=hash_faults(every_500=2)) as srv:
        c = client(srv, tmp_path, api_key=secret)
        c.run_many(reqs(8))
        assert secret not in repr(c)
        c.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in blob
    assert secret not in caplog.text


def test_shared_limits_across_concurrent_chat_calls(tmp_path):
    with FakeOpenAIServer(latency=0.05) as srv:
        c = client(srv, tmp_path, concurrency=3, rpm=6000)
        in_flight = peak = 0
        orig = c._attempts

        async def counting(*a, **k):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await orig(*a, **k)
            finally:
                in_flight -= 1

        c._attempts = counting

        async def go():
            rs = await asyncio.gather(
                *(c.chat([{"role": "user", "content": f"j {i}"}], temperature=0.0) for i in range(12))
            )
            await c.aclose()
            return rs

        out = asyncio.run(go())
        assert all(r.ok for r in out) and peak == 3
        c.close()


def test_rate_limiter_waits_when_bucket_empty():
    async def go():
        rl = RateLimiter(per_minute=60)  # 1 per second, bucket of 60
        for _ in range(60):
            await rl.acquire()
        t = asyncio.get_running_loop().time()
        await rl.acquire(0.05)  # needs 0.05 s of refill
        return asyncio.get_running_loop().time() - t

    assert asyncio.run(go()) >= 0.03


def test_a_large_batch_starts_sending_at_once(tmp_path):
    # One task per request made the event loop look up all of them in the journal (and estimate
    # their tokens) before the first request left, and queued every answer behind that backlog.
    with FakeOpenAIServer() as srv:
        c = client(srv, tmp_path, concurrency=8)
        lookups = 0
        lookups_at_answer: list[int] = []
        get = c.journal.get

        def counting_get(key):
            nonlocal lookups
            lookups += 1
            return get(key)

        c.journal.get = counting_get
        srv.on_served = lambda count: lookups_at_answer.append(lookups)
        out = c.run_many(reqs(2000))
        c.close()
    assert all(r.ok for r in out) and lookups == 2000
    assert lookups_at_answer[0] <= 2 * 8, lookups_at_answer[:3]  # about one per worker, not 2000
