"""`python -m rolellm_jax.evaluate score` end to end on real RoleBench rows and on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rouge import Rouge as RougePkg
from rouge_chinese import Rouge as RougeChinesePkg

from rolellm_jax.evaluate import main

sys.setrecursionlimit(20000)


def run_score(capsys, *argv: str) -> tuple[int, dict, str]:
    rc = main(["score", *argv])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out.strip() else {}), out.err


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
    return path


def reference_mean(pred_file: Path, ref_file: Path, score) -> float:
    """Mean over rows, paired on the exact (role, question), of the best reference package score."""
    preds = {(r["role"], r["question"]): r["generated"][0] for r in rows(pred_file)}
    values = [max(score(preds[(r["role"], r["question"])], ref) for ref in r["generated"]) for r in rows(ref_file)]
    return sum(values) / len(values)


def test_score_chinese_role_specific_baseline_vs_test(capsys, rolebench_sample) -> None:
    folder = rolebench_sample / "rolebench-zh/role_specific"
    rc, report, err = run_score(
        capsys, "--pred", str(folder / "rolegpt_baseline.jsonl"), "--ref", str(folder / "test.jsonl"), "--lang", "zh"
    )
    assert rc == 0 and report["rows"] == 239 and report["warnings"] == [] and err == ""
    rouge_zh = RougeChinesePkg(metrics=["rouge-l"])

    def pkg(pred: str, ref: str) -> float:
        join = lambda t: " ".join(c for c in t if not c.isspace())  # noqa: E731
        return rouge_zh.get_scores(join(pred), join(ref))[0]["rouge-l"]["r"]

    assert report["score"] == pytest.approx(
        reference_mean(folder / "rolegpt_baseline.jsonl", folder / "test.jsonl", pkg), abs=1e-6
    )
    assert 0.1 < report["score"] < 0.6


def test_score_english_role_specific_pairs_whitespace_twins(capsys, rolebench_sample) -> None:
    # The sample has two questions that differ only in a trailing space: both must be scored.
    folder = rolebench_sample / "rolebench-eng/instruction-generalization/role_specific"
    rc, report, _ = run_score(
        capsys, "--pred", str(folder / "rolegpt_baseline.jsonl"), "--ref", str(folder / "test.jsonl")
    )
    assert rc == 0 and report["rows"] == 250
    assert report["unmatched"]["references_without_prediction"]["count"] == 0
    rouge_en = RougePkg(metrics=["rouge-l"])
    pkg = lambda p, r: rouge_en.get_scores(p.strip(), r.strip())[0]["rouge-l"]["r"]  # noqa: E731
    assert report["score"] == pytest.approx(
        reference_mean(folder / "rolegpt_baseline.jsonl", folder / "test.jsonl", pkg), abs=1e-6
    )


def test_unmatched_rows_are_reported_not_averaged(capsys, tmp_path) -> None:
    ref = write_rows(
        tmp_path / "ref.jsonl",
        [
            {"role": "Jack Sparrow", "question": " Where is the rum?", "generated": [" Gone, savvy?"]},
            {"role": "Jack Sparrow", "question": " Who are you?", "generated": [" Captain Jack Sparrow."]},
            {"role": "Jack Sparrow", "question": " Why?", "generated": [" Because."]},
        ],
    )
    pred = write_rows(
        tmp_path / "pred.jsonl",
        [
            {"role": "Jack Sparrow", "question": "Where is the rum?  ", "generated": ["Gone, savvy?"]},
            {"role": "Jack Sparrow", "question": "Who are you?", "generated": [""]},
            {"role": "Will Turner", "question": "Where is the rum?", "generated": ["No idea."]},
        ],
    )
    rc, report, err = run_score(capsys, "--pred", str(pred), "--ref", str(ref))
    assert rc == 0
    assert report["rows"] == 2 and report["empty_predictions"] == 1
    assert report["score"] == pytest.approx(0.5) and report["score_missing_as_zero"] == pytest.approx(1 / 3)
    assert report["unmatched"]["predictions_without_reference"]["count"] == 1
    assert (
        "pred.jsonl:3: Will Turner | Where is the rum?"
        in report["unmatched"]["predictions_without_reference"]["examples"][0]
    )
    assert report["unmatched"]["references_without_prediction"]["count"] == 1
    assert "ref.jsonl:3" in report["unmatched"]["references_without_prediction"]["examples"][0]
    assert "1 prediction row(s) have no reference and 1 reference row(s)" in err
    rc, _, _ = run_score(capsys, "--pred", str(pred), "--ref", str(ref), "--strict")
    assert rc == 1


def test_wrong_language_flag_on_chinese_text_is_an_error(capsys, tmp_path) -> None:
    item = {"role": "孙悟空", "question": "你是谁？", "generated": ["俺老孙乃齐天大圣是也！"]}
    path = write_rows(tmp_path / "zh.jsonl", [item])
    rc, report, err = run_score(capsys, "--pred", str(path), "--ref", str(path), "--lang", "en")
    assert rc == 1 and not report
    assert err.strip().splitlines() == [
        f"error: {path} vs {path}: --lang en was given but 100% of the reference texts are Chinese: "
        "use --lang zh, or leave --lang out"
    ]
    rc, report, err = run_score(capsys, "--pred", str(path), "--ref", str(path), "--lang", "zh")
    assert report["score"] == pytest.approx(1.0) and err == ""


def test_bad_line_is_one_line_error_with_file_and_line(capsys, tmp_path) -> None:
    good = write_rows(tmp_path / "ref.jsonl", [{"role": "A", "question": "q", "generated": ["a"]}])
    bad = tmp_path / "pred.jsonl"
    bad.write_text(
        '{"role": "A", "question": "q", "generated": ["a"]}\n{"role": "A", "generated": ["a"]}\n', encoding="utf-8"
    )
    rc, _, err = run_score(capsys, "--pred", str(bad), "--ref", str(good))
    assert rc == 1
    assert err.strip().splitlines() == [f"error: {bad}:2: key 'question': expected a non-empty string, got None"]


def test_release_parquet_shards_score_like_their_jsonl(capsys, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref_rows = [
        {
            "role": "Jack Sparrow",
            "question": " Where is the rum?",
            "generated": [" Gone, savvy?", " Drunk."],
            "type": ["what", "what"],
        },
        {"role": "Jack Sparrow", "question": " Who are you?", "generated": [" Captain Jack Sparrow."], "type": ["who"]},
    ]
    pred_rows = [
        {"role": "Jack Sparrow", "question": "Where is the rum?", "generated": ["Gone, I say"]},
        {"role": "Jack Sparrow", "question": "Who are you?", "generated": ["Jack."]},
    ]
    for name, items in (("ref", ref_rows), ("pred", pred_rows)):  # a release shard holds these columns
        write_rows(tmp_path / f"{name}.jsonl", items)
        pq.write_table(pa.Table.from_pylist(items), tmp_path / f"{name}.parquet")
    _, from_jsonl, _ = run_score(capsys, "--pred", str(tmp_path / "pred.jsonl"), "--ref", str(tmp_path / "ref.jsonl"))
    rc, from_parquet, _ = run_score(
        capsys, "--pred", str(tmp_path / "pred.parquet"), "--ref", str(tmp_path / "ref.parquet")
    )
    assert rc == 0 and 0 < from_parquet["score"] < 1 and from_parquet["score"] == from_jsonl["score"]
    pq.write_table(
        pa.Table.from_pylist([*pred_rows, {"role": "Jack Sparrow", "question": "", "generated": ["x"]}]),
        tmp_path / "bad.parquet",
    )
    rc, _, err = run_score(capsys, "--pred", str(tmp_path / "bad.parquet"), "--ref", str(tmp_path / "ref.parquet"))
    assert (
        rc == 1
        and err.strip() == f"error: {tmp_path / 'bad.parquet'}:3: key 'question': expected a non-empty string, got ''"
    )


def test_module_entry_point(tmp_path) -> None:
    path = write_rows(tmp_path / "p.jsonl", [{"role": "A", "question": "q", "generated": ["a b c"]}])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rolellm_jax.evaluate",
            "score",
            "--pred",
            str(path),
            "--ref",
            str(path),
            "--mode",
            "f1",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["score"] == pytest.approx(1.0)
