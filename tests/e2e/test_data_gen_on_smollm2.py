"""The loop closed with a real model: data_gen's profile and Context-Instruct stages for one role, from
a one-scene script, against our server serving SmolLM2-135M-Instruct (tests/helpers/smollm2.py).

The profile (third-person description, then its second-person rewrite) and the role-specific
questions are the real model's words. A 135M model follows the prompts' format only sometimes, so
the test checks what data_gen reports (every request journaled and answered; the items parsed from
the answers kept or dropped with counts that add up to the rows written) and that at least one
question with its answer survives. Settings are chosen for a small, fast run: one segment, one
question per kind, short max_tokens, greedy descriptions; Context-Instruct samples at the default
temperature, its script-agnostic request seeded by data_gen (segment 0).
"""

from __future__ import annotations

import json
import sqlite3

from data_gen.__main__ import main
from data_gen.files import read_jsonl
from data_gen.pipeline.context_instruct import parse_qa
from rolellm_jax.checkpoints.model_folder import load_model
from rolellm_jax.checkpoints.tokenizer import load_tokenizer, stop_token_ids
from rolellm_jax.inference.engine import Engine
from rolellm_jax.inference.server import ServedModel, build_app
from tests.helpers.live_server import live_server

ROLE = "Sherlock Holmes"
SCRIPT = """TITLE: The Adventure of the Copper Kettle
ROLE: Sherlock Holmes = HOLMES

SCENE 1. Baker Street, a foggy morning in November.
WATSON: You have been staring at that envelope for a quarter of an hour, Holmes.
HOLMES: Because it tells me more than its writer intended, Watson. Observe the stamp.
WATSON: It is an ordinary penny stamp.
HOLMES: Stuck on upside down, by a left-handed person in a great hurry. Our client is anxious.
MRS HUDSON: A young lady to see you, Mr Holmes.
HOLMES: Show her up at once, Mrs Hudson. The game is afoot.
"""
SETTINGS = ["--desc-temperature", "0", "--desc-max-tokens", "100", "--questions-per-segment", "3"]
SETTINGS += ["--ci-max-tokens", "100", "--timeout", "600", "--max-retries", "0", "--no-progress"]


def test_smollm2_writes_a_profile_and_role_specific_questions_through_our_server(smollm2_dir, tmp_path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "kettle.txt").write_text(SCRIPT, encoding="utf-8")
    work = tmp_path / "work"
    model, _ = load_model(smollm2_dir, dtype="float32", param_dtype="float32")
    tokenizer = load_tokenizer(smollm2_dir)
    engine = Engine(model, tokenizer, eos_token_ids=stop_token_ids(smollm2_dir, tokenizer), slots=2, max_len=1024)
    try:
        with live_server(build_app(ServedModel(engine.start(), tokenizer, "llama", "smollm2"))) as url:
            common = ["--work", str(work), "--model", "smollm2", "--base-url", url + "/v1", "--api-key", "unused"]
            assert main(["profiles", "--scripts", str(tmp_path / "scripts"), *common, *SETTINGS]) == 0
            assert main(["context-instruct", *common, *SETTINGS]) == 0
    finally:
        engine.stop()

    # the profile: the model's description of the role, in the second person
    desc = json.loads((work / "profiles-eng" / "desc.json").read_text())
    assert list(desc) == [ROLE] and len(desc[ROLE].split()) >= 5
    # every request journaled and answered: 2 description steps, then 2 Context-Instruct kinds
    with sqlite3.connect(work / "journal.sqlite") as journal:
        answers = journal.execute("select text, error from responses order by created").fetchall()
        requests = [json.loads(r) for (r,) in journal.execute("select request from responses order by created")]
    assert len(answers) == 4 and all(text and error is None for text, error in answers)
    assert [r["params"]["max_tokens"] for r in requests] == [100] * 4  # --desc-max-tokens, --ci-max-tokens
    stage = json.loads((work / "stages-eng" / "context_instruct.json").read_text())
    assert (stage["usage"]["requests"], stage["usage"]["failed"]) == (2, 0)
    # the items parsed from the two answers are each kept or dropped, and the counts say so
    cleaning = stage["cleaning"]["context_instruct"]
    parsed = sum(len(parse_qa(text)) for text, _ in answers[2:])
    unparsable = sum(not parse_qa(text) for text, _ in answers[2:])
    assert cleaning["kept"] + sum(cleaning["dropped"].values()) == parsed + unparsable
    assert cleaning["dropped"].get("unparsable_answer", 0) == unparsable
    rows = read_jsonl(work / "context_instruct-eng.jsonl")
    assert len(rows) == cleaning["kept"] >= 1
    for row in rows:  # questions with answers, from the model's own text
        assert row["role"] == ROLE and row["type"] in ("script_based", "script_agnostic")
        assert row["question"].strip() and row["generated"][0].strip()
        assert any(row["question"] in text and row["generated"][0] in text for text, _ in answers[2:])
