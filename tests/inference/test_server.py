"""The OpenAI-compatible server, live on 127.0.0.1, through the real ``openai`` client (sync, async,
streaming): replies parse as the client's types, greedy text equals generate()'s, roles get the
training system text, concurrent streams complete, a client that leaves frees its slot."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from rolellm_jax.data.chat_format import render_prompt, role_system_text
from rolellm_jax.inference.engine import Engine, Finished
from rolellm_jax.inference.generate import SamplingConfig, generate
from rolellm_jax.inference.roles import merge_roles, roles_from_cards, roles_from_profiles
from rolellm_jax.inference.server import ServedModel, build_app
from tests.helpers.card_fixtures import write_card_folder
from tests.helpers.live_server import live_server
from tests.helpers.rolebench_fixtures import DESC_ENG, write_original_layout
from tests.helpers.serving_fixtures import tiny_serving_model

MAX_LEN = 640  # the role system text alone is ~470 tiny-tokenizer tokens


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, tokenizer = tiny_serving_model()
    cards = tmp_path_factory.mktemp("cards")
    write_card_folder(cards)
    roles = merge_roles(
        roles_from_profiles(write_original_layout(tmp_path_factory.mktemp("rolebench"))), roles_from_cards(cards)
    )
    eos = (tokenizer.eos_token_id,)
    engine = Engine(model, tokenizer, eos_token_ids=eos, slots=16, max_len=MAX_LEN).start()
    served = ServedModel(engine, tokenizer, "llama", "tiny", roles)
    with live_server(build_app(served)) as url:
        yield {"model": model, "tokenizer": tokenizer, "eos": eos, "url": url + "/v1", "served": served}
    engine.stop()


def client(setup, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=setup["url"], api_key="unused", max_retries=0, **kw)


def greedy_text(
    setup, system: str | None, question: str, max_tokens: int, repetition_penalty: float = 1.0
) -> tuple[str, list[int]]:
    """What generate() answers to the same conversation, and the prompt ids."""
    tok = setup["tokenizer"]
    if system is None:
        from rolellm_jax.data.chat_format import render_chat_prompt

        prompt = render_chat_prompt(tok, "llama", [{"role": "user", "content": question}])
    else:
        prompt = render_prompt(tok, "llama", system, question)
    sampling = SamplingConfig(
        max_new_tokens=max_tokens, eos_token_ids=setup["eos"], repetition_penalty=repetition_penalty
    )
    ids = generate(setup["model"], [prompt], sampling, batch_size=1)[0]
    return tok.decode(ids, skip_special_tokens=True), prompt


def test_models_lists_the_checkpoint_and_every_role(setup) -> None:
    models = client(setup).models.list().data
    ids = [m.id for m in models]
    assert ids == ["tiny", *DESC_ENG, "剑客", "Mira", "Old Tam Card"]
    assert models[-1].model_extra["greeting"] == "Mind the rocks, User."


def test_card_model_id_gets_the_system_text_of_its_description(setup) -> None:
    question = "How many ships today?"
    for name, description in (
        (
            "Mira",
            "Mira is a lighthouse keeper who counts ships.\n\nDry humour; never hurries.\n\n"
            "User arrives at Mira's lighthouse in a storm.",
        ),
        ("Old Tam Card", None),
    ):
        reply = client(setup).chat.completions.create(
            model=name, messages=[{"role": "user", "content": question}], max_tokens=6, temperature=0
        )
        role = setup["served"].roles[name]
        assert description is None or role.description == description
        want, prompt = greedy_text(setup, role_system_text("eng", name, role.description), question, 6)
        assert reply.usage.prompt_tokens == len(prompt) and reply.choices[0].message.content == want


def test_sync_reply_parses_and_equals_generate(setup) -> None:
    reply = client(setup).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Describe rain number 1."}], max_tokens=9, temperature=0
    )
    want, prompt = greedy_text(setup, None, "Describe rain number 1.", 9)
    assert isinstance(reply, ChatCompletion) and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == want
    assert (
        reply.usage.prompt_tokens == len(prompt)
        and reply.usage.total_tokens == len(prompt) + reply.usage.completion_tokens
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_repetition_penalty_field_reaches_the_sampler(setup) -> None:
    question = "Describe rain number 2."
    reply = client(setup).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": question}],
        max_tokens=12,
        temperature=0,
        extra_body={"repetition_penalty": 1.8},  # vLLM's extra field
    )
    want, _ = greedy_text(setup, None, question, 12, repetition_penalty=1.8)
    assert want != greedy_text(setup, None, question, 12)[0]
    assert reply.choices[0].message.content == want


def test_min_tokens_field_reaches_the_engine(setup) -> None:
    ask = lambda minimum: client(setup).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Describe rain number 3."}],
        max_tokens=12,
        temperature=0,
        extra_body={"min_tokens": minimum},  # vLLM's extra field (what it does: test_engine's min_tokens test)
    )
    assert ask(12).choices[0].message.content  # accepted (what it does: test_engine)
    with pytest.raises(openai.BadRequestError, match=r"min_tokens=13: must be in \[0, max_tokens=12\]"):
        ask(13)


def test_role_model_id_gets_the_training_system_text(setup) -> None:
    question = "Captain Vale, what happened on voyage 2?"
    ask = lambda messages: client(setup).chat.completions.create(
        model="Captain Vale", messages=messages, max_tokens=10, temperature=0
    )
    reply = ask([{"role": "user", "content": question}])
    system = role_system_text("eng", "Captain Vale", DESC_ENG["Captain Vale"])
    want, prompt = greedy_text(setup, system, question, 10)
    assert reply.usage.prompt_tokens == len(prompt) and reply.choices[0].message.content == want
    # a request's own system message is used as given
    own = ask([{"role": "system", "content": "You are a teapot."}, {"role": "user", "content": question}])
    want_own, prompt_own = greedy_text(setup, "You are a teapot.", question, 10)
    assert own.usage.prompt_tokens == len(prompt_own) and own.choices[0].message.content == want_own


def test_16_concurrent_async_streams_complete_with_generate_text(setup) -> None:
    questions = [f"Describe rain number {i}." + " Why?" * (i % 5) for i in range(16)]

    async def one(c: openai.AsyncOpenAI, q: str, include_usage: bool):
        stream = await c.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": q}],
            max_tokens=12,
            temperature=0,
            stream=True,
            **({"stream_options": {"include_usage": True}} if include_usage else {}),
        )
        return [chunk async for chunk in stream]

    async def everyone():
        async with openai.AsyncOpenAI(base_url=setup["url"], api_key="unused", max_retries=0) as c:
            return await asyncio.gather(*(one(c, q, i % 2 == 0) for i, q in enumerate(questions)))

    results = asyncio.run(everyone())
    for q, chunks in zip(questions, results):
        want, prompt = greedy_text(setup, None, q, 12)
        assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == want
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == len(prompt)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


@pytest.fixture
def one_slot(setup):
    """A second server over a 1-slot engine with no queue, that records how requests ended."""
    engine = Engine(setup["model"], setup["tokenizer"], eos_token_ids=(), slots=1, max_len=MAX_LEN, max_queue=0)
    finished: list[Finished] = []
    emit = engine._emit

    def recording(handle, event):
        if isinstance(event, Finished):
            finished.append(event)
        emit(handle, event)

    engine._emit = recording
    engine.start()
    with live_server(build_app(ServedModel(engine, setup["tokenizer"], "llama", "tiny"))) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0), finished
    engine.stop()


def test_client_that_leaves_mid_stream_frees_its_slot(one_slot) -> None:
    c, finished = one_slot
    messages = [{"role": "user", "content": "Tell me a long story."}]
    stream = c.chat.completions.create(model="tiny", messages=messages, max_tokens=140, temperature=0, stream=True)
    next(iter(stream))
    # the only slot is busy and nothing may wait: a second request is turned away
    with pytest.raises(openai.RateLimitError) as busy:
        c.chat.completions.create(model="tiny", messages=messages, max_tokens=3)
    assert busy.value.response.headers["retry-after"] == "1"
    stream.close()  # the client goes away
    reply, deadline = None, time.monotonic() + 60  # generous: a loaded CI machine notices the close late
    while reply is None and time.monotonic() < deadline:
        try:
            reply = c.chat.completions.create(model="tiny", messages=messages, max_tokens=3, temperature=0)
        except openai.RateLimitError:
            asyncio.run(asyncio.sleep(0.05))
    assert reply is not None, "the slot of the client that left was never freed"
    assert reply.usage.completion_tokens == 3
    assert finished[0].reason == "cancelled" and finished[0].completion_tokens < 140


def test_client_that_leaves_a_whole_reply_is_cancelled_even_while_it_waits(setup) -> None:
    import http.client
    import json
    import time
    from urllib.parse import urlparse

    # an engine not started yet: the request can only wait, so its cancellation is the client's doing
    engine = Engine(setup["model"], setup["tokenizer"], eos_token_ids=(), slots=1, max_len=MAX_LEN)
    with live_server(build_app(ServedModel(engine, setup["tokenizer"], "llama", "tiny"))) as url:
        where = urlparse(url)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 600}
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        for _ in range(100):
            if engine.load()["waiting"]:
                break
            time.sleep(0.05)
        waiting = engine._waiting[0]
        conn.sock.close()  # gone before the answer
        for _ in range(100):
            if waiting.cancelled.is_set():
                break
            time.sleep(0.05)
        assert waiting.cancelled.is_set()
        events = []
        waiting.sink = events.append  # the server's sink is gone with its request
        engine.start()
        for _ in range(100):
            if events:
                break
            time.sleep(0.05)
    engine.stop()
    assert events == [Finished("cancelled", len(waiting.request.prompt_ids), 0)]  # never decoded


def test_client_that_leaves_a_whole_reply_while_it_decodes_frees_its_slot(one_slot, monkeypatch) -> None:
    import http.client
    import json
    import time
    from urllib.parse import urlparse

    from rolellm_jax.inference import kv_slots

    real = kv_slots.decode_rows
    # a token every 20 ms: pieces keep arriving, yet the client's departure must be noticed
    monkeypatch.setattr(kv_slots, "decode_rows", lambda *a, **kw: (time.sleep(0.02), real(*a, **kw))[1])
    c, finished = one_slot
    where = urlparse(str(c.base_url))
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Go on."}], "max_tokens": 600}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    time.sleep(0.5)
    conn.sock.close()
    for _ in range(300):
        if finished:
            break
        time.sleep(0.05)
    assert finished and finished[0].reason == "cancelled" and finished[0].completion_tokens < 300
