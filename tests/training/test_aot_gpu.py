"""aot for GPUs: the train step of a preset compiles for H100s on this CPU machine (deviceless XLA:GPU,
the CUDA PJRT plugin only; the cuDNN attention case also needs cuDNN's library, no GPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from rolellm_jax.aot import main
from rolellm_jax.errors import ConfigError
from rolellm_jax.training.aot import compile_for_topology, report
from rolellm_jax.training.gpu_targets import GPUS, parse_gpu_topology
from tests.helpers.tiny_models import tiny_model_flags


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent namespace package is absent
        return False


has_cuda_plugin = installed("jax_plugins.xla_cuda12")
needs_plugin = pytest.mark.skipif(not has_cuda_plugin, reason="jax-cuda12-plugin is not installed (the gpu-aot extra)")
has_cudnn = installed("nvidia.cudnn")

TINY = [
    *tiny_model_flags(hidden_size=64, intermediate_size=128, vocab_size=512),
    "--data.seq_len=128",
    "--train.global_batch_size=16",
    "--train.grad_accum=2",
]


@needs_plugin
def test_tiny_llama_compiles_for_eight_h100s(monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75")
    result = compile_for_topology(["--config", "launch/configs/rolellama-7b.yaml", *TINY], "h100:2x4")
    assert result["chips"] == 8 and result["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert result["device_kind"] == "NVIDIA H100 80GB HBM3"
    # fp32 params + two AdamW moments, sharded over 8 GPUs: at least 12 bytes/param / 8
    assert result["arguments"] >= 12 * result["params"] / 8
    assert result["hbm"] == int(0.75 * GPUS["h100"].memory_bytes) and result["fits"]
    text = report(result, (0.5,))
    assert "of 59.3 GiB (0.75 of the GPU's 79.1 GiB) -> FITS" in text
    step = result["step_flops"] / (8 * 989e12 * 0.5)  # H100's dense bf16 peak
    assert f"{step:7.2f} s/step" in text


@needs_plugin
@pytest.mark.skipif(not has_cudnn, reason="cuDNN (nvidia-cudnn-cu12) is not installed (the gpu-aot extra)")
def test_cudnn_attention_of_packed_rows_is_the_fused_kernel():
    # Packed rows carry a segment mask: it must still reach cuDNN's flash attention, forward and backward
    result = compile_for_topology(
        [
            "--config",
            "launch/configs/rolellama-7b.yaml",
            *TINY,
            "--model.dtype=bfloat16",
            "--model.attention_impl=cudnn",
            "--model.remat_policy=none",
        ],
        "h100",
    )
    assert result["chips"] == 1 and result["fits"]
    # the layers are scanned: one forward and one backward call in the loop bodies. Both causal: with
    # the segment mask alone cuDNN would compute every logit above the diagonal too (NO_MASK)
    assert result["cudnn_attention_calls"] == {"forward": 1, "backward": 1, "masks": ["CAUSAL"]}
    assert "cuDNN fused attention: 1 forward, 1 backward call(s) in the program, mask CAUSAL" in report(result)


def test_gpu_topology_forms():
    assert parse_gpu_topology("h100")[1:] == (1, 1)
    assert parse_gpu_topology("h200:8")[1:] == (1, 8)
    assert parse_gpu_topology("a100:2x8")[1:] == (2, 8)
    for bad in ("h100:0", "h100:2x2x2", "h100:eight"):
        with pytest.raises(ConfigError, match="expected h100, h100:<gpus> or h100:<hosts>x<gpus per host>"):
            parse_gpu_topology(bad)


def test_missing_plugin_says_what_to_install(monkeypatch, capsys):
    from jax.experimental import topologies

    def no_plugin(*args, **kwargs):
        raise NotImplementedError("topology not implemented for cuda")

    monkeypatch.setattr(topologies, "get_topology_desc", no_plugin)
    assert main(["--config", "launch/configs/rolellama-7b.yaml", "--topology", "h100", *TINY]) == 1
    err = capsys.readouterr().err
    assert "needs the CUDA PJRT plugin" in err and "pip install -e '.[gpu-aot]'" in err


@needs_plugin
def test_bad_memory_fraction_is_named():
    # a fresh process: jax's CUDA plugin reads the variable too when it first loads, and fails on it
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": "most"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rolellm_jax.aot",
            "--config",
            "launch/configs/rolellama-7b.yaml",
            "--topology",
            "h100",
            *TINY,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION='most'" in run.stderr.strip().splitlines()[-1]


@needs_plugin
def test_over_the_gpu_pool_exits_3_with_the_knobs(monkeypatch, capsys):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.000001")  # ~85 KB of an H100: nothing fits
    assert main(["--config", "launch/configs/rolellama-7b.yaml", "--topology", "h100", *TINY]) == 3
    out = capsys.readouterr()
    assert "DOES NOT FIT" in out.out and "lower train.global_batch_size" in out.err


@needs_plugin
@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_every_listed_gpu_target_compiles(gpu):
    # each table row must make a target config XLA accepts (A100: sm_80, no Hopper features)
    result = compile_for_topology(
        ["--config", "launch/configs/rolellama-7b.yaml", *TINY, "--train.global_batch_size=4"], gpu
    )
    assert result["device_kind"] == GPUS[gpu].device_kind and result["fits"]
