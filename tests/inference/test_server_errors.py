"""Bad input to the live server gets OpenAI's error shape naming the field; the API key guards every
/v1 route and never reaches the logs; one failing request leaves the others alone."""

from __future__ import annotations

import http.client
import json
import logging
import threading
from urllib.parse import urlparse

import numpy as np
import openai
import pytest

from rolellm_jax.data.chat_format import render_chat_prompt
from rolellm_jax.inference import kv_slots
from rolellm_jax.inference.engine import Engine
from rolellm_jax.inference.server import ServedModel, ServeError, build_app, check_bind
from tests.helpers.live_server import live_server
from tests.helpers.serving_fixtures import tiny_serving_model

KEY = "sk-test-0123456789-secret"
MAX_LEN = 64
USER = [{"role": "user", "content": "What is rain?"}]


@pytest.fixture(scope="module")
def server():
    model, tokenizer = tiny_serving_model()
    engine = Engine(model, tokenizer, eos_token_ids=(tokenizer.eos_token_id,), slots=2, max_len=MAX_LEN).start()
    app = build_app(ServedModel(engine, tokenizer, "llama", "tiny"), api_key=KEY, max_body_bytes=4096)
    with live_server(app, log_level="debug") as url:
        yield url, tokenizer
    engine.stop()


def client(server, key=KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=key, max_retries=0)


def raw_post(server, body: bytes | None, headers: dict | None = None, path="/v1/chat/completions", auth=True):
    url = urlparse(server[0])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = ({"Authorization": f"Bearer {KEY}"} if auth else {}) | (headers or {})
    conn.request("POST" if body is not None else "GET", path, body, headers)
    response = conn.getresponse()
    status, data = response.status, json.loads(response.read())
    conn.close()
    return status, data


def test_malformed_json_is_400_in_openai_shape(server) -> None:
    status, data = raw_post(server, b'{"model": "tiny", "messages": [')
    assert status == 400 and set(data["error"]) == {"message", "type", "param", "code"}
    assert "not valid JSON" in data["error"]["message"] and data["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": []}, "messages"),
        ({"stream": "maybe"}, "stream"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ],
)
def test_bad_field_is_400_naming_it(server, fields, param) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(**{"model": "tiny", "messages": USER, **fields})
    assert err.value.param == param, err.value.message
    assert err.value.body["message"].startswith(param)


def test_n_other_than_1_is_refused(server) -> None:
    with pytest.raises(openai.BadRequestError, match="only n=1") as err:
        client(server).chat.completions.create(model="tiny", messages=USER, n=2)
    assert err.value.param == "n"


def test_unknown_model_is_404_listing_the_known_ones(server) -> None:
    with pytest.raises(openai.NotFoundError, match="'gpt-9' not found; known models: 'tiny'") as err:
        client(server).chat.completions.create(model="gpt-9", messages=USER)
    assert err.value.code == "model_not_found" and err.value.param == "model"


def test_prompt_plus_max_tokens_over_the_context_is_400_with_both_numbers(server) -> None:
    prompt_len = len(render_chat_prompt(server[1], "llama", USER))
    with pytest.raises(openai.BadRequestError) as err:
        client(server).chat.completions.create(model="tiny", messages=USER, max_completion_tokens=60)
    assert f"prompt has {prompt_len} tokens and max_tokens is 60" in err.value.message
    assert f"context length of {MAX_LEN} tokens" in err.value.message and err.value.code == "context_length_exceeded"
    long = [{"role": "user", "content": "rain " * MAX_LEN}]
    with pytest.raises(openai.BadRequestError, match="tokens \\(no room for an answer\\): over .* 64 tokens") as err:
        client(server).chat.completions.create(model="tiny", messages=long)
    assert err.value.param == "messages"
    reply = client(server).chat.completions.create(model="tiny", messages=USER, max_tokens=MAX_LEN - prompt_len)
    assert reply.usage.prompt_tokens == prompt_len  # the limit is exact


def test_body_over_the_limit_is_413(server) -> None:
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    status, data = raw_post(server, big, {"Content-Type": "application/json"})
    assert status == 413 and "over 4096 bytes" in data["error"]["message"]


def test_missing_or_wrong_key_is_401_and_the_key_is_never_logged(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):  # they do not propagate to the root logger
        logging.getLogger(name).addHandler(caplog.handler)
    with pytest.raises(openai.AuthenticationError) as err:
        client(server, key="wrong-key").models.list()
    assert err.value.code == "invalid_api_key"
    status, data = raw_post(server, None, path="/v1/models", auth=False)  # no Authorization header at all
    assert status == 401 and data["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").chat.completions.create(model="tiny", messages=USER)
    assert [m.id for m in client(server).models.list()] == ["tiny"]
    client(server).chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).removeHandler(caplog.handler)
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith(("openai", "httpx"))]
    assert any("/v1/chat/completions" in line and "401" in line for line in server_logs)  # the access log is seen
    assert not any(KEY in line or "wrong" in line for line in server_logs)


def test_one_failing_request_leaves_the_others_alone(server, monkeypatch) -> None:
    real = kv_slots.prefill_rows
    poison = server[1]("poison", add_special_tokens=False)["input_ids"][-1]

    def failing(graphdef, state, cache, ids, *args):
        if poison in np.asarray(ids):
            raise RuntimeError("injected prefill failure")
        return real(graphdef, state, cache, ids, *args)

    monkeypatch.setattr(kv_slots, "prefill_rows", failing)
    results = {}

    def ask(name, content):
        try:
            results[name] = client(server).chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": content}], max_tokens=8
            )
        except openai.APIStatusError as err:
            results[name] = err

    threads = [threading.Thread(target=ask, args=a) for a in (("bad", "poison"), ("good", "What is rain?"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results["bad"], openai.InternalServerError) and "injected prefill failure" in str(results["bad"])
    assert results["good"].usage.completion_tokens > 0
    assert client(server).chat.completions.create(model="tiny", messages=USER, max_tokens=2).usage


def test_non_loopback_host_needs_a_key() -> None:
    check_bind("127.0.0.1", None, False)
    check_bind("::1", None, False)
    check_bind("0.0.0.0", "key", False)
    check_bind("0.0.0.0", None, True)
    for host in ("0.0.0.0", "192.168.1.7", "example.org"):
        with pytest.raises(ServeError, match=f"--host {host}: serving beyond this machine needs --api-key"):
            check_bind(host, None, False)
