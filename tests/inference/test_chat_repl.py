"""The REPL: streamed answers that keep the history (rendered as chat_format does), /reset,
/role, /save, a card's greeting; in-process on an engine and as a client of our live server."""

from __future__ import annotations

import io
import json

import pytest

from rolellm_jax import chat as chat_cli
from rolellm_jax.data.chat_format import render_chat_prompt, render_prompt
from rolellm_jax.errors import EXIT_USER_ERROR
from rolellm_jax.inference.chat_session import ChatSession, EngineBackend, ServerBackend, run_repl
from rolellm_jax.inference.engine import Engine
from rolellm_jax.inference.generate import SamplingConfig, generate
from rolellm_jax.inference.roles import merge_roles, roles_from_cards, roles_from_profiles
from rolellm_jax.inference.server import ServedModel, build_app
from tests.helpers.card_fixtures import write_card_folder
from tests.helpers.live_server import live_server
from tests.helpers.rolebench_fixtures import write_original_layout
from tests.helpers.serving_fixtures import tiny_serving_model

GREEDY = {"temperature": 0.0, "max_tokens": 6}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    model, tokenizer = tiny_serving_model()
    cards = tmp_path_factory.mktemp("cards")
    write_card_folder(cards)
    source = write_original_layout(tmp_path_factory.mktemp("rb"))
    roles = merge_roles(roles_from_profiles(source), roles_from_cards(cards))
    engine = Engine(model, tokenizer, eos_token_ids=(tokenizer.eos_token_id,), slots=2, max_len=640).start()
    yield {"model": model, "tok": tokenizer, "roles": roles, "engine": engine, "source": source}
    engine.stop()


def answer_of(world, prompt: list[int]) -> str:
    sampling = SamplingConfig(max_new_tokens=6, eos_token_ids=(world["tok"].eos_token_id,))
    return world["tok"].decode(generate(world["model"], [prompt], sampling, batch_size=1)[0], skip_special_tokens=True)


def test_repl_keeps_history_switches_roles_and_saves(world, tmp_path) -> None:
    tok, roles = world["tok"], world["roles"]
    backend = EngineBackend(world["engine"], tok, "llama")
    session = ChatSession(backend, "local", roles["Captain Vale"], roles, GREEDY)
    out = io.StringIO()
    run_repl(session, ["hello", "and again?", f"/save {tmp_path / 'talk.json'}"], out)
    system = roles["Captain Vale"].system_text()
    first = answer_of(world, render_prompt(tok, "llama", system, "hello"))
    conversation = [
        {"role": "system", "content": system},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "and again?"},
    ]
    assert backend.last_prompt == render_chat_prompt(tok, "llama", conversation)
    assert out.getvalue().startswith(first + "\n")
    saved = json.loads((tmp_path / "talk.json").read_text())
    assert saved["role"] == "Captain Vale" and saved["messages"][:4] == conversation and len(saved["messages"]) == 5

    out = io.StringIO()
    run_repl(session, ["/reset", "/role Doctor Moss", "hi", "/role Nobody", "/quit", "never read"], out)
    assert backend.last_prompt == render_prompt(tok, "llama", roles["Doctor Moss"].system_text(), "hi")
    assert "error: /role Nobody: unknown role" in out.getvalue() and len(session.history) == 2


def test_card_greeting_is_shown_and_the_server_backend_answers_alike(world) -> None:
    roles = world["roles"]
    out = io.StringIO()
    session = ChatSession(
        EngineBackend(world["engine"], world["tok"], "llama"), "local", roles["Old Tam Card"], roles, GREEDY
    )
    run_repl(session, ["How are the rocks?"], out)
    assert out.getvalue().startswith("Old Tam Card: Mind the rocks, User.\n")
    local_answer = out.getvalue().splitlines()[1]
    served = ServedModel(world["engine"], world["tok"], "llama", "tiny", roles)
    with live_server(build_app(served)) as url:
        remote = ChatSession(ServerBackend(url + "/v1", None), "Old Tam Card", settings=GREEDY)
        out = io.StringIO()
        run_repl(remote, ["How are the rocks?", "/role gpt-9", "hi"], out)
    lines = out.getvalue().splitlines()
    assert lines[0] == local_answer  # the server adds the card's system text itself
    assert lines[-1].startswith("error: the server answered: ") and "not found" in lines[-1]


def test_cli_refuses_an_unknown_role_in_one_line(world, capsys) -> None:
    code = chat_cli.main(["--ckpt", "unused", "--role", "Nobody", "--profiles", str(world["source"])])
    assert code == EXIT_USER_ERROR and "--role Nobody: not among the roles" in capsys.readouterr().err
