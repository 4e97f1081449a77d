"""Issue 16, items 8 and 9: a user's --config layers on the demo preset, and every enumerated option
is checked when the command line is parsed (naming the allowed values), before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolellm_jax.errors import ConfigError
from rolellm_jax.train import main
from rolellm_jax.training.run_config import PRESET_DIR, load_preset, parse_args

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _train_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rolellm_jax.train", *args], cwd=REPO, env=ENV, capture_output=True, text=True
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:") or "Traceback" in line]


def test_bf16_dtype_is_refused_at_parse_time_naming_the_dtypes_and_writing_nothing(tmp_path):
    out = tmp_path / "run"
    result = _train_cli("--model.dtype=bf16", f"--train.output_dir={out}")
    assert result.returncode == 1, result.stderr[-2000:]
    assert _error_lines(result.stderr) == [
        "error: command line: model.dtype='bf16': expected one of float32, bfloat16, float16"
    ]
    assert not out.exists()  # no tokenizer trained, no half-written run folder


@pytest.mark.parametrize(
    "arg, allowed",
    [
        ("--model.param_dtype=bfloat", "float32, bfloat16, float16"),
        ("--model.remat_policy=fulll", "none, full, dots_saveable, dots_with_no_batch_dims_saveable"),
        ("--model.attention_impl=flash", "xla, cudnn, splash"),
        ("--model.weight_grad=gpu", "auto, xla, cpu"),
        ("--data.setting=role_gen", "instruction_generalization"),
        ("--data.references_per_row=two", "'all', 'first' or N >= 1"),
        ("--data.lang=fr", "eng (or en), zh"),
        ("--lora.rank=0", "must be at least 1"),
    ],
)
def test_enumerated_options_fail_in_one_line_before_any_work(arg, allowed, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([arg, f"--train.output_dir={out}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and arg.split("=")[0][2:] in err[0] and allowed in err[0], err
    assert not out.exists()


def test_help_lists_the_allowed_values():
    result = _train_cli("--help")
    assert result.returncode == 0
    line = {row.split()[0]: row for row in result.stdout.splitlines() if row.strip().startswith("--")}
    assert "float32 | bfloat16 | float16" in line["--model.dtype"]
    assert "none | full | dots_saveable" in line["--model.remat_policy"]
    assert "xla | cudnn | splash" in line["--model.attention_impl"]
    assert "instruction_generalization | role_generalization" in line["--data.setting"]
    assert "all | first | N" in line["--data.references_per_row"]


def test_load_model_refuses_a_bad_dtype_before_reading_anything(tmp_path):
    import rolellm_jax

    with pytest.raises(ConfigError, match=r"dtype='bf16': expected one of float32, bfloat16, float16"):
        rolellm_jax.load_model(tmp_path / "no-model-here", dtype="bf16")


def test_a_user_config_with_only_train_keys_is_the_demo_model(tmp_path):
    """The newcomer's YAML: train.steps and train.output_dir only. It was a 7B model (OOM-killed)."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"train:\n  steps: 3\n  output_dir: {tmp_path / 'run'}\n")
    cfg, _ = parse_args(["--config", str(mine)])
    demo = load_preset(PRESET_DIR / "demo.yaml")
    assert cfg.model == demo.model and cfg.data == demo.data
    assert cfg.train.steps == 3
    result = _train_cli("--config", str(mine), "--help")  # --help shows the values after the preset
    row = next(r for r in result.stdout.splitlines() if r.strip().startswith("--model.hidden_size "))
    assert row.split()[1] == str(demo.model.hidden_size), row
    assert "layers on it" in result.stdout


def test_aot_without_topology_names_the_flag():
    """`aot` without --topology printed its docstring (exit 2) instead of saying what is missing."""
    result = subprocess.run(
        [sys.executable, "-m", "rolellm_jax.aot", "--config", "launch/configs/demo.yaml"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("error: --topology is required")


def test_missing_model_init_says_no_such_folder(tmp_path):
    result = _train_cli(f"--model.init={tmp_path / 'llama-7b'}", f"--train.output_dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert _error_lines(result.stderr) == [f"error: model.init={tmp_path / 'llama-7b'}: no such folder"]
    assert not (tmp_path / "run").exists()


def test_lora_targets_of_a_scratch_model_fail_at_parse_time(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--lora.enabled=true", "--lora.targets=[qproj]", f"--train.output_dir={out}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lora.targets: ['qproj'] match no kernel" in err[0] and "q_proj" in err[0]
    assert not out.exists()


def test_missing_data_source_writes_no_run_folder(tmp_path):
    out = tmp_path / "run"
    result = _train_cli(f"--data.source={tmp_path / 'no-rolebench'}", f"--train.output_dir={out}")
    assert result.returncode == 1 and len(_error_lines(result.stderr)) == 1, result.stderr[-2000:]
    assert not out.exists()
