"""An endpoint that is down: said as such at once (openai's message is 'Request timed out.'), never
journaled, so a plain rerun asks again once the server is up; answers a server gave stay failed."""

from __future__ import annotations

import os
import socket

import pytest

from data_gen.__main__ import main
from data_gen.llm.client import LLMClient
from data_gen.llm.types import EndpointUnreachableError
from tests.data_gen.test_llm import KEY, reqs
from tests.data_gen.test_pipeline import build_args
from tests.helpers.fake_openai_server import FakeOpenAIServer, body_key, rolebench_responder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(base_url: str, tmp_path, **kw) -> LLMClient:
    c = LLMClient("fake-model", journal_path=tmp_path / "journal.sqlite", base_url=base_url, api_key=KEY, **kw)

    async def no_wait(delay):  # a retry would show up here (and in c.retries)
        raise AssertionError(f"retried after {delay:.2f}s")

    c._sleep = no_wait
    return c


@pytest.mark.parametrize(
    ("url", "said"),
    [(f"http://127.0.0.1:{free_port()}/v1", "refused the connection"), ("http://no-such-host.invalid/v1", "resolved")],
)
def test_a_down_endpoint_is_named_at_once_and_not_journaled(tmp_path, url, said):
    c = client(url, tmp_path, concurrency=2)
    with pytest.raises(EndpointUnreachableError, match=f"^endpoint {url} .*{said}"):
        c.run_many(reqs(5))
    assert c.retries == 0 and len(c.journal) == 0
    c.close()


def test_a_plain_rerun_retries_once_the_server_is_up_and_400s_stay_failed(tmp_path, capsys, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    args = build_args(url, tmp_path / "work", tmp_path / "out")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: endpoint {url} refused the connection"), err

    def plan(key: str, attempt: int) -> str | None:
        return "400" if key == refused_key else None

    refused_key = body_key(
        {"model": "fake-model", "messages": [{"role": "user", "content": "q 1"}], "temperature": 0.0, "max_tokens": 50}
    )
    with FakeOpenAIServer(rolebench_responder, port=port, fault_plan=plan) as srv:
        assert main(args) == 0  # the same command: nothing was journaled as failed
        assert max(srv.attempts.values()) == 1
        c = client(url, tmp_path)  # the same journal, a request the server refuses with a 400
        first = c.run_many(reqs(3))
        assert [r.ok for r in first] == [True, False, True] and "BadRequestError" in first[1].error
        assert not c.run_many(reqs(3))[1].ok and srv.attempts[refused_key] == 1  # replayed, not re-asked
        c.close()
    assert os.path.isdir(tmp_path / "out" / "v0.1.0")
