"""Issue 16, item 10: a run folder whose checkpoints were trained with other settings is not resumed
silently ("already complete: nothing to train" after a changed --train.lr, another LR schedule after a
changed --train.steps): the run refuses, naming each key with both values, unless --resume.allow-changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rolellm_jax.training.run_config import changed_settings, parse_args

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TINY = [
    "--model.hidden_size=32",
    "--model.intermediate_size=64",
    "--model.num_attention_heads=4",
    "--model.num_key_value_heads=2",
    "--data.max_rows=8",
    "--data.seq_len=512",
    "--train.global_batch_size=8",
    "--train.warmup_steps=1",
    "--train.export=false",
    "--logging.progress=false",
    "--logging.tensorboard=false",
]


def _train(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rolellm_jax.train", *TINY, f"--train.output_dir={out}", *extra],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_changed_settings_refuse_to_resume_naming_keys_and_values_unless_allowed(tmp_path):
    out = tmp_path / "run"
    first = _train(out, "--train.steps=2", "--train.lr=0.01")
    assert first.returncode == 0, first.stderr[-3000:]
    # the model's size is logged before the first step
    assert "model: llama" in first.stderr and " parameters (" in first.stderr

    changed = _train(out, "--train.steps=3", "--train.lr=0.001", "--data.seq_len=384")
    assert changed.returncode == 1, changed.stdout + changed.stderr[-3000:]
    errors = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, changed.stderr[-3000:]
    for needle in ("train.lr 0.01 -> 0.001", "train.steps 2 -> 3", "data.seq_len 512 -> 384", "--resume.allow_changes"):
        assert needle in errors[0], errors[0]
    assert "nothing to train" not in changed.stdout

    allowed = _train(out, "--train.steps=3", "--train.lr=0.01", "--resume.allow-changes=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "1 steps this run" in allowed.stdout
    assert "changed settings" in allowed.stderr and "train.steps 2 -> 3" in allowed.stderr


def test_only_training_settings_are_compared():
    base, _ = parse_args([])
    moved, _ = parse_args(["--train.output_dir=elsewhere", "--model.remat_policy=full", "--logging.every=5"])
    assert changed_settings(base.to_dict(), moved.to_dict()) == []
    lora, _ = parse_args(["--lora.enabled=true", "--data.kinds=[general]"])
    assert changed_settings(base.to_dict(), lora.to_dict()) == [
        ("data.kinds", ["general", "role_specific"], ["general"]),
        ("lora.enabled", False, True),
    ]
