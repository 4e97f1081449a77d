"""`evaluate judge` against a local OpenAI-compatible server (127.0.0.1), malformed answers included."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest

from rolellm_jax.evaluate import main
from rolellm_jax.evaluation import judge
from tests.helpers.fake_openai_server import FakeOpenAIServer

KEY = "sk-test-key"
QUESTIONS = [f"Question number {i}?" for i in range(8)]
ANSWERS = {"role_model": "Arr, savvy? {q}", "plain_model": "I do not know. {q}", "echo_model": "{q}"}


def shown_answers(body: dict) -> list[dict]:
    user = body["messages"][-1]["content"]
    start = user.index("[\n")
    return json.loads(user[start : user.index("\n]", start) + 2])


def ranking_responder():
    """Ranks the answer with "Arr" first; question 1 is malformed once, question 2 always."""
    seen = collections.Counter()

    def respond(body: dict) -> tuple[str, str]:
        user = body["messages"][-1]["content"]
        number = int(re.search(r"Question number (\d+)", user).group(1))
        seen[number] += 1
        seen[(number, body["temperature"], body.get("seed"))] += 1
        shown = shown_answers(body)
        order = sorted(shown, key=lambda a: 0 if "Arr" in a["answer"] else 1 if "know" in a["answer"] else 2)
        ranking = [{"model": a["model"], "reason": "style", "rank": r} for r, a in enumerate(order, 1)]
        if number == 1 and seen[number] == 1:
            return "I think Model A is best, then the others.", "stop"
        if number == 1:  # second attempt: a Python literal inside a code fence, with prose around
            return "Sure!\n```python\n" + repr(ranking) + "\n```", "stop"
        if number == 2:  # ranks a model that does not exist
            return json.dumps(ranking[:-1] + [{"model": "Model Z", "reason": "?", "rank": 3}]), "stop"
        return json.dumps(ranking, ensure_ascii=False), "stop"

    return respond, seen


def write_inputs(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name, template in ANSWERS.items():
        path = tmp_path / f"{name}.jsonl"
        rows = [{"role": "Jack Sparrow", "question": f" {q}", "generated": [template.format(q=q)]} for q in QUESTIONS]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        files[name] = path
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"Jack Sparrow": "A pirate captain, witty and unpredictable."}), encoding="utf-8")
    files["profiles"] = profiles
    return files


def run_judge(capsys, monkeypatch, srv, files, tmp_path, *extra: str) -> tuple[int, str]:
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    argv = [
        "judge",
        "--model",
        "fake-model",
        "--journal",
        str(tmp_path / "journal.sqlite"),
        "--out",
        str(tmp_path / "out"),
        "--profiles",
        str(files["profiles"]),
        *extra,
    ]
    for name in ANSWERS:
        argv += ["--pred", f"{name}={files[name]}"]
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_judge_ranks_retries_malformed_and_reports_win_rates(capsys, monkeypatch, tmp_path) -> None:
    files = write_inputs(tmp_path)
    respond, seen = ranking_responder()
    with FakeOpenAIServer(respond) as srv:
        rc, err = run_judge(capsys, monkeypatch, srv, files, tmp_path)
        assert rc == 0, err
        summary = json.loads((tmp_path / "out/judge_summary.json").read_text())
        judgments = [json.loads(line) for line in (tmp_path / "out/judgments.jsonl").read_text().splitlines()]
        assert summary["questions"] == 8 and summary["parsed"] == 7 and summary["unparsed"] == 1
        assert seen[1] == 2 and seen[2] == 3  # malformed once then fixed; malformed three times
        # re-asks are not verbatim repeats of the temperature-0 request (which would answer the same)
        assert (
            seen[(2, 0.0, None)] == seen[(2, judge.REASK_TEMPERATURE, 1)] == seen[(2, judge.REASK_TEMPERATURE, 2)] == 1
        )
        by_question = {j["question"]: j for j in judgments}
        assert by_question[QUESTIONS[1]]["status"] == "parsed" and by_question[QUESTIONS[1]]["attempts"] == 2
        assert (
            by_question[QUESTIONS[2]]["status"] == "unparsed" and "Model Z" in by_question[QUESTIONS[2]]["last_answer"]
        )
        models = summary["models"]
        assert models["role_model"] == {"win_rate": 1.0, "top1_rate": 1.0}
        assert models["plain_model"]["win_rate"] == pytest.approx(0.5)
        assert models["echo_model"] == {"win_rate": 0.0, "top1_rate": 0.0}
        # Anonymised and shuffled: the winner is not always shown in the same place, under no real name.
        positions = {list(j["shown_as"].values()).index("role_model") for j in judgments}
        assert len(positions) > 1
        assert all(set(j["shown_as"]) == {"Model A", "Model B", "Model C"} for j in judgments)

        # A rerun replays the journal: identical results, no new request.
        requests_before = sum(srv.stats()["attempts"].values())
        rc, _ = run_judge(capsys, monkeypatch, srv, files, tmp_path)
        assert rc == 0 and sum(srv.stats()["attempts"].values()) == requests_before
        assert json.loads((tmp_path / "out/judge_summary.json").read_text())["models"] == models


def test_failed_requests_fail_the_command_and_retry_failed_asks_again(capsys, monkeypatch, tmp_path) -> None:
    files = write_inputs(tmp_path)
    fast = ("--max-retries", "0", "--backoff-base", "0.01")
    with FakeOpenAIServer(fault_plan=lambda key, attempt: "500") as down:
        rc, err = run_judge(capsys, monkeypatch, down, files, tmp_path, *fast)
    assert rc == 1
    assert (
        err.strip().splitlines()[-1].startswith("error: 8 of 8 questions got no ranking: the judge requests failed (")
    )
    assert err.strip().endswith("rerun with --retry-failed")
    summary = json.loads((tmp_path / "out/judge_summary.json").read_text())  # written all the same
    assert summary["failed"] == summary["unparsed"] == 8 and summary["parsed"] == 0

    respond, _ = ranking_responder()
    with FakeOpenAIServer(respond) as up:
        rc, _ = run_judge(capsys, monkeypatch, up, files, tmp_path, *fast)  # the journal replays the failures
        assert rc == 1 and sum(up.stats()["attempts"].values()) == 0
        rc, err = run_judge(capsys, monkeypatch, up, files, tmp_path, *fast, "--retry-failed")
    assert rc == 0, err
    summary = json.loads((tmp_path / "out/judge_summary.json").read_text())
    assert summary["failed"] == 0 and summary["parsed"] == 7 and summary["unparsed"] == 1  # one malformed thrice


def test_prompt_carries_role_description_question_and_no_model_names(tmp_path) -> None:
    item = judge.JudgeItem("孙悟空", "齐天大圣", "你是谁？", {"mine": "俺老孙", "theirs": "我是AI"}, ("俺是齐天大圣",))
    import random

    messages, names = judge.build_messages(item, "zh", random.Random(0))
    user = messages[1]["content"]
    assert "孙悟空" in user and "齐天大圣" in user and "你是谁？" in user and "参考答案" in user
    assert "mine" not in user and "theirs" not in user and set(names) == {"模型A", "模型B"}
    assert "角色扮演" in messages[0]["content"]


def test_parse_ranking_is_robust() -> None:
    names = ["Model A", "Model B"]
    good = '[{"model": "Model A", "reason": "x", "rank": 2}, {"model": "Model B", "reason": "y", "rank": "1"}]'
    assert judge.parse_ranking(good, names) == {
        "Model A": {"rank": 2, "reason": "x"},
        "Model B": {"rank": 1, "reason": "y"},
    }
    assert judge.parse_ranking("noise " + good.replace('"', "'") + " noise", names) is not None
    for bad in (
        "",
        "no list",
        "[1, 2]",
        '[{"model": "Model A", "rank": 1}]',
        good.replace('"1"', '"first"'),
        '[{"model": "Model A", "rank": 1}, {"model": "Model A", "rank": 2}]',
        "[{'model': 'Model A', 'rank': 1},",
    ):
        assert judge.parse_ranking(bad, names) is None, bad


def test_bad_pred_flag_is_one_line_error(capsys, monkeypatch, tmp_path) -> None:
    files = write_inputs(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    rc = main(
        [
            "judge",
            "--model",
            "m",
            "--journal",
            str(tmp_path / "j.sqlite"),
            "--out",
            str(tmp_path / "o"),
            "--profiles",
            str(files["profiles"]),
            "--pred",
            f"only={files['role_model']}",
            "--pred",
            "broken",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == "error: --pred 'broken': expected NAME=FILE"
