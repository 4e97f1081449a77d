"""The loop closed: ``python -m data_gen build`` and ``python -m rolellm_jax.evaluate judge`` run to
the end against our own server (a tiny random model): every request journaled and answered, the
answers parsed or dropped with counts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from data_gen.__main__ import main
from rolellm_jax import evaluate
from rolellm_jax.inference.engine import Engine
from rolellm_jax.inference.server import ServedModel, build_app
from tests.helpers.live_server import live_server
from tests.helpers.rolebench_fixtures import DESC_ENG
from tests.helpers.serving_fixtures import tiny_serving_model

DEMO = Path(__file__).resolve().parents[2] / "data_gen" / "demo"


def test_data_gen_build_runs_to_the_end_on_our_server(tmp_path) -> None:
    model, tokenizer = tiny_serving_model()
    # the demo scripts make prompts of up to ~2300 tiny-tokenizer tokens
    engine = Engine(model, tokenizer, eos_token_ids=(tokenizer.eos_token_id,), slots=4, max_len=3072).start()
    instructions = tmp_path / "instructions.jsonl"
    instructions.write_text(
        "".join(json.dumps({"instruction": q}) + "\n" for q in ("Describe rain.", "Name a colour."))
    )
    args = ["build", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--version", "0.1.0"]
    args += ["--scripts", str(DEMO / "scripts-eng"), "--instructions", str(instructions), "--segment-tokens", "250"]
    args += ["--ci-max-tokens", "24", "--rolegpt-max-tokens", "12", "--samples", "2", "--model", "tiny"]
    args += ["--allow-empty"]  # a random model's text parses as no question: the empty split is expected here
    # greedy descriptions: sampled ones (temperature 0.2, no seed) left a random model's second-person
    # rewrite empty now and then (its first draw EOS), and the profiles stage rightly stops on that
    args += ["--desc-temperature", "0"]
    try:
        with live_server(build_app(ServedModel(engine, tokenizer, "llama", "tiny"))) as url:
            assert main([*args, "--base-url", url + "/v1", "--api-key", "unused", "--no-progress"]) == 0
    finally:
        engine.stop()
    manifest = json.loads((tmp_path / "out" / "v0.1.0" / "manifest.json").read_text())
    usage = manifest["usage"]
    assert usage["total"]["failed"] == 0 and usage["total"]["requests"] > 0
    assert {"profiles", "context_instruct", "rolegpt"} <= set(usage)
    with sqlite3.connect(tmp_path / "work" / "journal.sqlite") as journal:
        rows = journal.execute("select count(*), sum(error is not null) from responses").fetchone()
    assert rows == (usage["total"]["requests"], 0)
    # random text parses as nothing: every answer is dropped, each drop counted with its reason
    cleaning = manifest["cleaning"]
    assert cleaning["context_instruct"]["kept"] + sum(cleaning["context_instruct"]["dropped"].values()) > 0
    assert cleaning["rolegpt"]["kept"] + sum(cleaning["rolegpt"]["dropped"].values()) > 0


def test_judge_runs_on_our_server(tmp_path) -> None:
    model, tokenizer = tiny_serving_model()
    engine = Engine(model, tokenizer, eos_token_ids=(tokenizer.eos_token_id,), slots=4, max_len=2048).start()
    for name in ("a", "b"):
        rows = [{"role": "Captain Vale", "question": f"Q{i}?", "generated": [f"{name} answer {i}"]} for i in range(2)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "desc.json").write_text(json.dumps(DESC_ENG))
    args = ["judge", "--pred", f"A={tmp_path / 'a.jsonl'}", "--pred", f"B={tmp_path / 'b.jsonl'}"]
    args += ["--profiles", str(tmp_path / "desc.json"), "--model", "tiny", "--journal", str(tmp_path / "j.sqlite")]
    args += ["--out", str(tmp_path / "out"), "--retries", "0", "--api-key", "sk-local-unused", "--no-progress"]
    try:
        with live_server(build_app(ServedModel(engine, tokenizer, "llama", "tiny"))) as url:
            assert evaluate.main([*args, "--base-url", url + "/v1"]) == 0
    finally:
        engine.stop()
    summary = json.loads((tmp_path / "out" / "judge_summary.json").read_text())
    assert summary["questions"] == 2 and summary["failed"] == 0  # answered; random text ranks nothing
    assert summary["parsed"] + summary["unparsed"] == 2
