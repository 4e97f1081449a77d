"""Issue 16, item 13: the `datasets` library's "Generating <split> split" bars are shown only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rolellm_jax.checkpoints.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[2]


def test_data_cli_is_quiet_unless_verbose(tmp_path):
    tok = tmp_path / "tok"
    train_tokenizer([f"Who are you, role number {i}? 你好，我是孙悟空。" for i in range(50)], 300, tok)
    for verbose in (False, True):
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_path / f"cache-{verbose}"),  # a fresh cache: the splits are generated
        }
        args = ["--source", "release/rolebench-demo", "--tokenizer", str(tok), *(["--verbose"] if verbose else [])]
        result = subprocess.run(
            [sys.executable, "-m", "rolellm_jax.data", *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("Generating train split" in result.stderr) == verbose, result.stderr[-2000:]
