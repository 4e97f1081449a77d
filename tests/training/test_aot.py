"""aot: the train step of a preset compiles for a TPU topology on this CPU machine (libtpu only)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from rolellm_jax.aot import main
from rolellm_jax.training.aot import compile_for_topology, report
from tests.helpers.tiny_models import tiny_model_flags

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")

TINY = [
    *tiny_model_flags(hidden_size=64, intermediate_size=128, vocab_size=512),
    "--data.seq_len=128",
    "--train.global_batch_size=8",
    "--train.grad_accum=2",
]


def test_tiny_llama_compiles_for_v5p_and_fits():
    result = compile_for_topology(["--config", "launch/configs/rolellama-7b.yaml", *TINY], "v5p:2x2x1")
    assert result["chips"] == 4 and result["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
    assert "TPU" in result["device_kind"]
    # the program's text is read on GPUs only: a large TPU executable's does not always print
    assert result["cudnn_attention_calls"] is None
    # fp32 params + two AdamW moments, sharded over 4 chips: at least 12 bytes/param / 4
    assert result["arguments"] >= 12 * result["params"] / 4
    assert 0 < result["total"] < result["hbm"] and result["fits"]
    assert "FITS" in report(result)
    # 6 x (params but the untied embedding table) + 12 x layers x heads x head_dim x seq, per token
    per_token = 6 * (result["params"] - 512 * 64) + 12 * 2 * 4 * 16 * 128
    assert result["step_flops"] == 8 * 128 * per_token
    text = report(result, (0.5,))
    step = result["step_flops"] / (4 * 459e12 * 0.5)
    assert f"{step:7.2f} s/step" in text and "if the 4 chips ran at (assumed, not measured)" in text
    # a tiny step reads in its own unit, not as 0.00 PFLOP; a tiny model too, not as 0.00B params (issue 16)
    assert f"model FLOPs per step {result['step_flops'] / 1e6:.2f} MFLOP" in text
    assert "0.00B" not in text and re.search(r"model \d+\.\d+[KM] params", text), text


def test_bad_mfu_is_refused(capsys):
    assert main(["--topology", "v5p:2x2x1", "--mfu=0.3,high"]) == 2
    assert "--mfu=0.3,high" in capsys.readouterr().err


def test_too_big_for_the_chip_says_which_knob(capsys):
    # ~2B params (2 wide layers) with fp32 AdamW state need ~35 GiB: not one 16 GiB v5e chip
    rc = main(
        [
            "--config",
            "launch/configs/rolellama-7b.yaml",
            "--topology",
            "v5e:1x1",
            "--train.global_batch_size=1",
            "--train.grad_accum=1",
            "--model.num_hidden_layers=2",
            "--model.hidden_size=8192",
            "--model.intermediate_size=22016",
            "--model.num_attention_heads=64",
            "--model.num_key_value_heads=64",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 3
    assert "lower train.global_batch_size" in err and "lora.enabled=true" in err


def test_unknown_generation_is_named():
    assert main(["--topology", "v9x:2x2"]) == 1
