"""Issue 16, item 13: what `convert` writes and says about paths: no loading flags of ours in the
exported tokenizer_config.json, a warning when there is no tokenizer to carry along, one-line errors
for an --out that is a file, a --ckpt / --hf that is no folder (or a training run's folder)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

from rolellm_jax.checkpoints.tokenizer import LOADING_KEYS, copy_tokenizer_files
from tests.checkpoints.test_convert import (  # noqa: F401 - fixtures
    cli,
    fails_with,
    hf_llama,
    llama_dir,
    tokenizer_dir,
)

REPO = Path(__file__).resolve().parents[2]


def test_exported_tokenizer_config_has_no_loading_flags(llama_dir, tmp_path):
    # transformers saves how a tokenizer was loaded (offline: local_files_only / is_local true) among its kwargs
    config = json.loads((llama_dir / "tokenizer_config.json").read_text())
    config.update(local_files_only=True, is_local=True)
    (llama_dir / "tokenizer_config.json").write_text(json.dumps(config))
    assert cli("hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt") == 0
    assert cli("jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf_out") == 0
    for folder in (tmp_path / "ckpt", tmp_path / "hf_out"):
        written = json.loads((folder / "tokenizer_config.json").read_text())
        assert not set(LOADING_KEYS) & set(written), folder
        assert written["eos_token"] == config["eos_token"]
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "hf_out"))) > 4


def test_a_trained_tokenizer_saves_no_loading_flags(tokenizer_dir):
    written = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert "local_files_only" not in written and "is_local" not in written


def test_copy_drops_loading_flags(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "src" / "tokenizer_config.json").write_text(json.dumps({"local_files_only": True, "pad_token": "x"}))
    assert copy_tokenizer_files(tmp_path / "src", tmp_path / "dst") == ["tokenizer_config.json"]
    assert json.loads((tmp_path / "dst" / "tokenizer_config.json").read_text()) == {"pad_token": "x"}


def test_converting_without_tokenizer_files_warns(llama_dir, tmp_path, caplog):
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        (llama_dir / name).unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING):
        assert cli("hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt") == 0
        assert cli("jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf_out") == 0
    warned = [r.getMessage() for r in caplog.records if "has no tokenizer files" in r.getMessage()]
    assert len(warned) == 2 and str(llama_dir) in warned[0] and str(tmp_path / "ckpt") in warned[1]


def test_out_that_is_a_file_is_one_line(llama_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = fails_with(capsys, "hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "file")
    assert (
        err.strip()
        == f"error: {tmp_path / 'file'}: a file, not a folder (the converted model is a folder: choose another --out)"
    )
    assert cli("hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt") == 0
    err = fails_with(capsys, "jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "file")
    assert "a file, not a folder" in err


def test_missing_or_run_folder_ckpt_says_what_it_is(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run_folder = tmp_path / "runs" / "demo"
    (run_folder / "export").mkdir(parents=True)
    (run_folder / "export" / "rolellm_config.json").write_text("{}")
    cases = [
        (["jax-to-hf", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "no such folder"),
        (["hf-to-jax", "--hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], "no such folder"),
        (["jax-to-hf", "--ckpt", str(run_folder), "--out", str(tmp_path / "o")], f"its model is {run_folder}/export"),
    ]
    for args, needle in cases:
        result = subprocess.run(
            [sys.executable, "-m", "rolellm_jax.convert", *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and lines[-1].startswith("error: ") and needle in lines[-1], result.stderr
        assert "Traceback" not in result.stderr
