"""Context-Instruct against a server that grades in the paper's words (kept nothing before, and the
build succeeded), and against one that grades everything low: the stage warns per role with the
drop reasons, `shards` refuses an empty role_specific train split unless --allow-empty, and the
manifest keeps kept/dropped counts per role and reason."""

from __future__ import annotations

import json
import logging

from data_gen.__main__ import main
from tests.data_gen.test_pipeline import KEY, build_args
from tests.helpers.fake_openai_server import FakeOpenAIServer, request_kind, rolebench_responder

ROLE_SPECIFIC_TRAIN = "rolebench-eng/instruction-generalization/role_specific/train.jsonl"


def paper_wording(body: dict) -> tuple[str, str]:
    text, finish = rolebench_responder(body)
    if request_kind(body) == "context-instruct":
        grade = (
            "Factualness" if "not tied to any particular scene" in body["messages"][-1]["content"] else "Completeness"
        )
        text = text.replace("**Confidence:**", f"**{grade}:**").replace("Confidence:", f"{grade}:")
    return text, finish


def all_low(body: dict) -> tuple[str, str]:
    text, finish = rolebench_responder(body)
    if request_kind(body) == "context-instruct":
        for high, low in (("high", "low"), ("High", "Low"), ("9/10", "3/10")):
            text = text.replace(high, low)
    return text, finish


def test_grades_in_the_papers_words_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    questions = {}
    for name, responder in (("ours", rolebench_responder), ("paper", paper_wording)):
        with FakeOpenAIServer(responder) as srv:
            assert main(build_args(srv.base_url, tmp_path / name / "work", tmp_path / name / "out")) == 0
        rows = (tmp_path / name / "out" / "v0.1.0" / ROLE_SPECIFIC_TRAIN).read_text().splitlines()
        questions[name] = [json.loads(r)["question"] for r in rows]
    # 0 kept before: the label was glued onto the question and the grade read as missing
    assert len(questions["paper"]) > 10 and questions["paper"] == questions["ours"]


def test_a_stage_keeping_nothing_warns_and_shards_refuses_unless_allow_empty(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.WARNING, logger="data_gen")
    args = build_args(None, tmp_path / "work", tmp_path / "out")
    with FakeOpenAIServer(all_low) as srv:
        assert main([*args, "--base-url", srv.base_url]) == 1
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("context_instruct: role")]
    assert len(warnings) == 3, warnings  # one per role of the demo scripts
    assert all("kept 0 of" in w and "below --min-keep-share 0.2" in w and "low_confidence" in w for w in warnings)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {ROLE_SPECIFIC_TRAIN}: the role_specific train split would be empty: ")
    assert "the context_instruct stage kept 0 questions (dropped: low_confidence " in err
    assert err.endswith("pass --allow-empty to write it anyway")
    assert not (tmp_path / "out" / "v0.1.0").exists()

    shards = ["shards", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--version", "0.1.0"]
    assert main(shards) == 1
    assert main([*shards, "--allow-empty"]) == 0
    manifest = json.loads((tmp_path / "out" / "v0.1.0" / "manifest.json").read_text())
    assert manifest["files"][ROLE_SPECIFIC_TRAIN]["rows"] == 0
    roles = manifest["cleaning"]["context_instruct"]["roles"]
    assert sorted(roles) == sorted(json.loads((tmp_path / "out" / "v0.1.0" / "profiles-eng/desc.json").read_text()))
    for counts in roles.values():
        assert counts["kept"] == 0 and counts["dropped"]["low_confidence"] > 0
    rolegpt = manifest["cleaning"]["rolegpt"]["roles"]
    assert sum(c["kept"] for c in rolegpt.values()) == manifest["cleaning"]["rolegpt"]["kept"]
