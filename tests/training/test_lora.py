"""LoRA as the train step computes it (adapters unmerged, training/lora.py ``attach``) equals the model with
the adapters merged into its kernels (``merge``, what export writes), across the layouts and dtypes the
step runs; a target that is no dense layer is refused by name."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rolellm_jax.parallel.sharding import MeshConfig, make_mesh
from rolellm_jax.training import lora as lora_lib
from rolellm_jax.training.config import LoraConfig, TrainConfig
from rolellm_jax.training.train_step import TrainProgram
from tests.helpers.tiny_models import tiny_config

SEQ = 16
CASES = {  # name: (config overrides, targets, tolerance)
    "llama scanned, untied head adapted": (
        dict(tie_word_embeddings=False),
        ["q_proj", "v_proj", "down_proj", "lm_head"],
        1e-5,
    ),
    "llama unrolled": (dict(scan_layers=False), ["q_proj", "k_proj", "o_proj", "up_proj"], 1e-5),
    "glm4 fused gate_up": (dict(family="glm4"), ["gate_up_proj", "v_proj"], 1e-5),
    # bf16 compute: merged rounds W + sAB into bf16 once, unmerged rounds W and the low-rank term apart
    "bf16 compute, fp32 params": (dict(dtype="bfloat16"), ["q_proj", "v_proj", "down_proj"], 0.02),
}


def programs(overrides: dict, targets: list[str]) -> tuple[TrainProgram, TrainProgram, LoraConfig]:
    cfg = tiny_config(max_position_embeddings=64, param_dtype="float32", **{"dtype": "float32", **overrides})
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    lora = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=targets)
    train = TrainConfig(global_batch_size=2, warmup_steps=0, lr=1e-2)
    adapted = TrainProgram.create(cfg, mesh, train, lora, SEQ)
    plain = TrainProgram.create(cfg, mesh, train, dataclasses.replace(lora, enabled=False), SEQ)
    return adapted, plain, lora


def batch() -> dict:
    ids = jax.random.randint(jax.random.key(1), (2, SEQ), 0, 64)
    positions = jnp.broadcast_to(jnp.arange(SEQ), (2, SEQ))
    return {"input_ids": ids, "positions": positions, "segment_ids": jnp.ones((2, SEQ), jnp.int32)}


@pytest.mark.parametrize("case", CASES)
def test_unmerged_adapters_compute_what_the_merged_export_computes(case):
    overrides, targets, tol = CASES[case]
    adapted, plain, lora = programs(overrides, targets)
    state, frozen = adapted.init_state(adapted.init_params(0), 0)
    # lora_b starts at zero (the base exactly); move every adapter so each one changes the output
    keys = iter(jax.random.split(jax.random.key(3), 64))
    trainable = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(next(keys), x.shape), state["trainable"])
    with jax.set_mesh(adapted.mesh):
        got = np.asarray(jax.jit(adapted.logits)(trainable, frozen, batch()))
        want = np.asarray(jax.jit(plain.logits)(lora_lib.merge(frozen, trainable, lora), None, batch()))
        base = np.asarray(jax.jit(plain.logits)(frozen, None, batch()))
    assert np.abs(got - base).max() > 20 * tol  # the adapters matter at this scale
    np.testing.assert_allclose(got, want, atol=tol, rtol=0)


def test_every_target_takes_part_in_the_step():
    """Each adapter gets a gradient: none is attached where the forward never reads it (the untied head
    reads its kernel directly, so it adds its adapter itself)."""
    adapted, _, _ = programs(dict(tie_word_embeddings=False), ["q_proj", "down_proj", "lm_head"])
    state, frozen = adapted.init_state(adapted.init_params(0), 0)
    rng = np.random.default_rng(0)
    data = {k: jnp.asarray(v) for k, v in batch().items()}
    data["targets"] = jnp.asarray(rng.integers(0, 64, (2, SEQ)), jnp.int32)
    data["loss_mask"] = jnp.ones((2, SEQ), jnp.int32)
    with jax.set_mesh(adapted.mesh):
        grads = jax.jit(jax.grad(lambda t: adapted.loss_sums(t, frozen, data)[0]))(state["trainable"])
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if path[-1].key == "lora_a":
            continue  # lora_a's gradient is zero while lora_b is (the init); lora_b's is not
        assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)


def test_flops_count_the_frozen_base_without_weight_gradients():
    adapted, plain, _ = programs({}, ["q_proj", "v_proj"])
    assert adapted.flops_per_token() < plain.flops_per_token()
    assert adapted.flops_per_token() > 2 / 3 * plain.flops_per_token()


def test_16bit_compute_on_a_cpu_trains_unrolled_layers():
    """XLA:CPU upcasts every 16-bit dynamic-update-slice to float32, so a scanned layer stack converted and
    rewrote its stacked backward residuals whole at every layer (benchmarks/RESULTS.md): on a CPU mesh a
    16-bit step unrolls the layers (the same stacked params); float32 keeps the scan."""
    adapted, _, _ = programs(dict(dtype="bfloat16"), ["q_proj", "v_proj"])
    assert not adapted.model_cfg.scan_layers and programs({}, ["q_proj"])[0].model_cfg.scan_layers
    state, frozen = adapted.init_state(adapted.init_params(0), 0)
    data = {k: jnp.asarray(v) for k, v in batch().items()}
    data["targets"] = data["input_ids"]
    data["loss_mask"] = jnp.ones((2, SEQ), jnp.float32)
    hlo = adapted.jitted_step().lower(state, frozen, data).compile().as_text()
    upcast_updates = [line for line in hlo.splitlines() if "dynamic-update-slice(%convert" in line]
    assert not upcast_updates, upcast_updates[:2]
