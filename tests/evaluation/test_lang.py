"""Issue 16, item 12: one language vocabulary everywhere (eng/en and zh), and `evaluate score` scores
in the references' language when --lang is not given (Chinese files were scored with the English
tokenizer, silently, and the warning claimed `--lang en was given` when it was the default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolellm_jax.evaluate import build_parser
from rolellm_jax.training.run_config import parse_args

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
    )


def test_score_without_lang_detects_chinese_from_real_rows(rolebench_sample):
    folder = rolebench_sample / "rolebench-zh" / "role_specific"
    files = ["--pred", str(folder / "rolegpt_baseline.jsonl"), "--ref", str(folder / "test.jsonl")]
    detected = _cli("rolellm_jax.evaluate", "score", *files)
    given = _cli("rolellm_jax.evaluate", "score", *files, "--lang", "zh")
    assert detected.returncode == 0 and given.returncode == 0, detected.stderr[-2000:]
    auto, explicit = json.loads(detected.stdout), json.loads(given.stdout)
    assert auto["lang"] == "zh" and auto["lang_detected"] is True and auto["warnings"] == []
    assert auto["score"] == explicit["score"] > 0.1
    assert "was given" not in detected.stderr


def test_score_detects_english_and_refuses_a_contradicting_flag(tmp_path):
    path = tmp_path / "en.jsonl"
    path.write_text(json.dumps({"role": "Sherlock", "question": "who are you?", "generated": ["a detective"]}) + "\n")
    auto = _cli("rolellm_jax.evaluate", "score", "--pred", str(path), "--ref", str(path))
    assert auto.returncode == 0 and json.loads(auto.stdout)["lang"] == "en"
    wrong = _cli("rolellm_jax.evaluate", "score", "--pred", str(path), "--ref", str(path), "--lang", "zh")
    assert wrong.returncode == 1
    last = wrong.stderr.strip().splitlines()[-1]
    assert last.endswith(
        "--lang zh was given but 0% of the reference texts are Chinese: use --lang en, or leave --lang out"
    )


@pytest.mark.parametrize("spelling, short", [("eng", "en"), ("en", "en"), ("zh", "zh"), ("english", "en")])
def test_evaluate_flags_take_both_spellings(spelling, short):
    score = build_parser().parse_args(["score", "--pred", "p", "--ref", "r", "--lang", spelling])
    judge = build_parser().parse_args(
        ["judge", "--pred", "a=a", "--pred", "b=b", "--profiles", "p", "--model", "m", "--journal", "j", "--out", "o"]
        + ["--lang", spelling]
    )
    assert score.lang == short and judge.lang == short


@pytest.mark.parametrize("spelling, canonical", [("en", "eng"), ("eng", "eng"), ("zh", "zh")])
def test_training_data_lang_takes_both_spellings(spelling, canonical):
    cfg, _ = parse_args([f"--data.lang={spelling}"] + (["--data.setting=instruction_generalization"]))
    assert cfg.data.lang == canonical


def test_data_cli_takes_en(tmp_path):
    """`python -m rolellm_jax.data --lang en` was argparse's "invalid choice: 'en'" (exit 2)."""
    result = _cli("rolellm_jax.data", "--lang", "en", "--tokenizer", str(tmp_path / "no-tokenizer"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "invalid choice" not in result.stderr and "no-tokenizer" in result.stderr.strip().splitlines()[-1]
    bad = _cli("rolellm_jax.data", "--lang", "fr", "--tokenizer", str(tmp_path))
    assert bad.returncode == 2 and "--lang='fr': expected one of eng (or en), zh" in bad.stderr


def test_run_split_takes_eng_as_well():
    args = build_parser().parse_args(
        ["run", "--ckpt", "c", "--data", "d", "--out", "o", "--split", "instruction_generalization_eng"]
    )
    assert args.split == ["instruction_generalization_en"]
