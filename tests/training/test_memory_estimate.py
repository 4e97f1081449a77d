"""Issue 16, item 8: the training state is counted before anything is allocated, and a run whose state
cannot fit is refused with the figures and the knobs (it was OOM-killed with no message)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from rolellm_jax.models.config import ModelConfig
from rolellm_jax.training.config import LoraConfig
from rolellm_jax.training.memory_estimate import (
    MemoryEstimateError,
    check_state_fits,
    estimate_state,
    human_count,
)
from rolellm_jax.training.run_config import RunConfig, model_config_of
from tests.helpers.subprocesses import run_module
from tests.helpers.tiny_models import tiny_hf_config

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_parameter_count_is_transformers_own():
    hf = tiny_hf_config(LlamaConfig, vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=3)
    with __import__("torch").device("meta"):
        reference = sum(p.numel() for p in LlamaForCausalLM(hf).parameters())
    ours = estimate_state(ModelConfig.from_hf_config(hf.to_dict()), LoraConfig())
    assert ours.parameters == reference
    assert ours.total_bytes == 4 * 4 * reference  # float32 params + grads + two AdamW moments


def test_the_dataclass_defaults_7b_model_is_refused_on_a_24gb_host_with_figures_and_knobs():
    estimate = estimate_state(model_config_of(RunConfig().model), LoraConfig())
    assert human_count(estimate.parameters) == "6.74B"  # LLaMA-7B
    with pytest.raises(MemoryEstimateError) as err:
        check_state_fits(estimate, 24 * 10**9, "this host (available memory)")
    message = str(err.value)
    for needle in ("6.74B parameters", "107.8 GB", "24.0 GB", "lora.enabled=true", "model.param_dtype=bfloat16"):
        assert needle in message, message
    lora = estimate_state(model_config_of(RunConfig().model), LoraConfig(enabled=True, rank=8))
    assert lora.trainable < estimate.parameters / 100 and lora.total_bytes < estimate.total_bytes / 3


def test_cli_refuses_a_state_that_cannot_fit_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    huge = [
        "--model.hidden_size=32768",
        "--model.intermediate_size=131072",
        "--model.num_hidden_layers=128",
        "--model.num_attention_heads=256",
        "--model.num_key_value_heads=256",
        f"--train.output_dir={out}",
    ]
    result = run_module("rolellm_jax.train", *huge, env=ENV, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "parameters" in errors[0] and "training state needs about" in errors[0], errors
    assert "model.num_hidden_layers" in errors[0] and "train.check_memory=false" in errors[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
