"""Run config: presets, dotted overrides (YAML-typed), unknown keys with a suggestion, --help."""

from __future__ import annotations

import re

import pytest

from rolellm_jax.train import main
from rolellm_jax.training.run_config import (
    PRESET_DIR,
    ConfigError,
    RunConfig,
    load_preset,
    model_config_of,
    option_table,
    parse_args,
)


def test_no_arguments_is_the_demo_preset():
    cfg, want_help = parse_args([])
    assert not want_help
    assert cfg == load_preset(PRESET_DIR / "demo.yaml")
    assert cfg.model.hidden_size == 64 and cfg.model.init is None
    assert cfg.train.output_dir == "runs/demo"


def test_dotted_overrides_are_yaml_typed():
    cfg, _ = parse_args(
        [
            "--train.lr=1e-5",
            "--data.kinds=[general]",
            "--model.init",
            "/ckpt/llama",
            "--lora.enabled=true",
            "--checkpoint.dir=null",
            "--mesh.fsdp=2",
        ]
    )
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.data.kinds == ("general",)
    assert cfg.model.init == "/ckpt/llama"
    assert cfg.lora.enabled is True
    assert cfg.checkpoint.dir is None
    assert cfg.mesh.fsdp == 2


def test_config_file_then_overrides(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("train:\n  steps: 7\n  lr: 0.5\nmodel:\n  hidden_size: 32\n")
    cfg, _ = parse_args(["--config", str(preset), "--train.lr=0.25"])
    assert (cfg.train.steps, cfg.train.lr, cfg.model.hidden_size) == (7, 0.25, 32)
    # keys the file leaves out are the demo preset's, not the dataclass defaults' (issue 16 item 8)
    assert cfg.model.num_hidden_layers == load_preset(PRESET_DIR / "demo.yaml").model.num_hidden_layers
    assert cfg.model.num_hidden_layers != RunConfig().model.num_hidden_layers


@pytest.mark.parametrize(
    "arg, suggestion",
    [
        ("--train.lrr=1", "train.lr"),
        ("--trian.lr=1", "train.lr"),
        ("--model.hiden_size=8", "model.hidden_size"),
        ("--train.learning_rate=1", "train.lr"),
        ("--train.gradient_accumulation_steps=2", "train.grad_accum"),
        ("--logging.save_steps=5", "checkpoint.every"),
        ("--train.max_seq_length=64", "data.seq_len"),
    ],
)
def test_unknown_key_names_the_nearest(arg, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown config key .*did you mean '{suggestion}'"):
        parse_args([arg])


def test_other_trainers_names_point_at_real_options():
    from rolellm_jax.training.run_config import OTHER_NAMES

    assert set(OTHER_NAMES.values()) <= {key for key, _, _ in option_table(RunConfig())}


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("checkpoint:\n  evry: 3\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: unknown config key 'checkpoint.evry' \(did you mean 'checkpoint.every'\?\)"
    ):
        parse_args(["--config", str(preset)])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"train.steps expects int, got 'many'"):
        parse_args(["--train.steps=many"])
    with pytest.raises(ConfigError, match=r"lora.targets expects a list"):
        parse_args(["--lora.targets=q_proj"])


@pytest.mark.parametrize(
    "arg,message",
    [
        ("--train.steps=0", "train.steps=0: must be at least 1"),  # once ran, "trained" nothing and exported
        ("--train.grad_accum=0", "train.grad_accum=0: must be at least 1"),
        ("--train.lr=-1e-4", "train.lr=-0.0001: must not be negative"),
        ("--train.min_lr_ratio=2", "train.min_lr_ratio=2.0: must be within [0, 1]"),
    ],
)
def test_out_of_range_train_values_name_the_key(arg, message):
    with pytest.raises(ConfigError, match=re.escape(f"command line: {message}")):
        parse_args([arg])


def test_help_lists_every_option_with_its_value(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    cfg, _ = parse_args([])
    for key, _tp, _value in option_table(cfg):
        assert f"--{key} " in out, key
    assert "--train.lr" in out and "0.003" in out
    assert "paper does not publish" in out


def test_cli_error_is_one_line_and_nonzero(capsys):
    assert main(["--train.lrr=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'train.lr'" in err[0]


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESET_DIR.glob("*.yaml")))
def test_presets_describe_valid_models(preset):
    cfg = load_preset(PRESET_DIR / preset)
    model_cfg = model_config_of(cfg.model)
    assert model_cfg.family == ("glm" if "glm" in preset else "llama")
    assert cfg.train.global_batch_size % cfg.train.grad_accum == 0
    assert cfg.lora.enabled == ("lora" in preset)
