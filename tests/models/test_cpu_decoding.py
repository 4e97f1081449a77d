"""The CPU decoding layout (models/layers.py ``for_cpu_decoding``) and the 16-bit forms that keep
XLA:CPU from copying or upcasting weights (models/modules.py ``embed_rows``, cpu_matmul's dot).

Values: the layout gives transformers' logits (prefill + cached steps, left padding, GQA, tied and
untied heads, the 8-device mesh) and the stacked model's greedy tokens. Structure: the compiled
decode step holds no weight-sized copy, slice or convert, fp32 and bf16 (a failure here is the
~3x weight traffic, and the bf16-slower-than-fp32 step, that benchmarks/RESULTS.md measured).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rolellm_jax.inference.generate import SamplingConfig, decoding_layout, generate
from rolellm_jax.models.cpu_decoding import for_cpu_decoding
from rolellm_jax.models.kernels import cpu_matmul
from rolellm_jax.models.modules import embed_rows
from rolellm_jax.parallel import sharding
from tests.models.test_models import TOL, T, hf_llama, hf_logits, left_padded_batch, max_diff_on_real_tokens, ported


@nnx.jit
def _step(model, ids, pos, seg, cache):
    return model(ids, positions=pos, segment_ids=seg, cache=cache)


def cached_logits(model, ids, pos, seg, prefill: int = 5) -> np.ndarray:
    cache = model.init_cache(ids.shape[0], max_len=T + 2)
    logits, cache = _step(model, ids[:, :prefill], pos[:, :prefill], seg[:, :prefill], cache)
    got = [np.asarray(logits)]
    for t in range(prefill, ids.shape[1]):
        logits, cache = _step(model, ids[:, t : t + 1], pos[:, t : t + 1], seg[:, t : t + 1], cache)
        got.append(np.asarray(logits))
    assert int(cache["index"]) == ids.shape[1]
    return np.concatenate(got, axis=1)


@pytest.mark.parametrize("kv_heads, tie", [(2, False), (4, True)], ids=["gqa-untied", "gqa-tied"])
def test_cpu_layout_prefill_and_steps_match_transformers(kv_heads, tie):
    hf = hf_llama(kv_heads=kv_heads, tie=tie)
    model = for_cpu_decoding(ported(hf))
    assert model.unstacked and len(model.layers) == 2
    assert isinstance(model.init_cache(2, 4)["k"], tuple)  # one buffer per layer
    ids, mask, pos, seg = left_padded_batch(2, (0, 3))
    diff = max_diff_on_real_tokens(cached_logits(model, ids, pos, seg), hf_logits(hf, ids, mask, pos), mask)
    assert diff <= TOL, diff


def test_one_device_layout_fuses_qkv_and_gate_up_and_keeps_the_logits():
    """On one device each layer runs one [D, (H + 2 KV) hd] q/k/v GEMV (Qwen2: biases too) and one [D, 2F]
    gate/up GEMV instead of five (fewer fixed per-call costs in a batch-1 step): the same logits
    as the unfused layout and transformers."""
    from tests.models.test_families import hf_qwen2

    hf = hf_qwen2()
    model = ported(hf)
    fused, plain = for_cpu_decoding(model), for_cpu_decoding(model, fuse_projections=False)
    cfg, attn, mlp = model.cfg, fused.layers[0].self_attn, fused.layers[0].mlp
    width = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_size
    assert attn.fused_qkv and attn.qkv_proj.packed.shape == (-(-width // 16), cfg.hidden_size, 16)
    assert attn.qkv_proj.features == width and attn.qkv_proj.bias.shape == (width,) and not hasattr(attn, "q_proj")
    assert mlp.fused and mlp.gate_up_proj.features == 2 * cfg.intermediate_size
    assert not plain.layers[0].self_attn.fused_qkv and not plain.layers[0].mlp.fused
    ids, mask, pos, seg = left_padded_batch(2, (0, 3))
    got = cached_logits(fused, ids, pos, seg)
    np.testing.assert_allclose(got, cached_logits(plain, ids, pos, seg), atol=1e-5)
    assert max_diff_on_real_tokens(got, hf_logits(hf, ids, mask, pos), mask) <= TOL


def test_a_layer_with_a_lora_adapter_is_not_fused():
    """Fusing would drop the attached adapter's low-rank term (training/lora.py ``attach``)."""
    from rolellm_jax.training.config import LoraConfig
    from rolellm_jax.training.lora import attach, init_adapters

    model = ported(hf_llama(kv_heads=2))
    lora = LoraConfig(enabled=True, rank=2, targets=["q_proj", "v_proj"])
    adapters = init_adapters(nnx.to_pure_dict(nnx.state(model, nnx.Param)), lora, jax.random.key(0))
    adapters = jax.tree.map(lambda a: a + 0.05, adapters)  # a non-zero B: the term changes the logits
    attach(model, adapters, lora)
    decoding = for_cpu_decoding(model)
    assert not decoding.layers[0].self_attn.fused_qkv
    ids, mask, pos, seg = left_padded_batch(2, (0, 3))
    want = np.asarray(model(jnp.asarray(ids), positions=jnp.asarray(pos), segment_ids=jnp.asarray(seg)))
    assert max_diff_on_real_tokens(cached_logits(decoding, ids, pos, seg), want, mask) <= TOL


@pytest.mark.parametrize("layout", ["cpu", "stacked"])
def test_a_window_of_a_larger_cache_reads_only_its_rows_and_slots(layout):
    """The cache-window contract (the serving engine's decode step): a batch of 2 rows over a cache of
    3 rows, at slots [4, 4 + span) of 4 + span + 2, gives transformers' logits although every slot
    outside the window holds junk; the step's keys land in place and nothing else changes."""
    hf = hf_llama(kv_heads=2)
    model = ported(hf)
    model = for_cpu_decoding(model) if layout == "cpu" else model
    ids, mask, pos, seg = left_padded_batch(2, (0, 3))
    lo, span = 4, T + 2
    junk = model.init_cache(3, lo + span + 2)
    rng = np.random.default_rng(0)
    fill = lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype)
    full = {"k": jax.tree.map(fill, junk["k"]), "v": jax.tree.map(fill, junk["v"])}
    before = jax.tree.map(np.asarray, full)
    cache = dict(full, segment_ids=jnp.zeros((2, span), jnp.int32), index=jnp.int32(lo), window_start=jnp.int32(lo))
    logits, cache = _step(model, ids[:, :5], pos[:, :5], seg[:, :5], cache)
    got = [np.asarray(logits)]
    for t in range(5, ids.shape[1]):
        logits, cache = _step(model, ids[:, t : t + 1], pos[:, t : t + 1], seg[:, t : t + 1], cache)
        got.append(np.asarray(logits))
    diff = max_diff_on_real_tokens(np.concatenate(got, axis=1), hf_logits(hf, ids, mask, pos), mask)
    assert diff <= TOL, diff
    assert int(cache["index"]) == lo + ids.shape[1] and int(cache["window_start"]) == lo
    written = slice(lo, lo + ids.shape[1])
    for name in ("k", "v"):
        for new, old in zip(jax.tree.leaves(cache[name]), jax.tree.leaves(before[name]), strict=True):
            new, rows, slots = np.asarray(new), (slice(None),) * (new.ndim - 4), (slice(None),) * (new.ndim - 3)
            assert np.array_equal(new[(*rows, 2)], old[(*rows, 2)])  # the third row: untouched
            untouched = np.ones(new.shape[new.ndim - 3], bool)
            untouched[written] = False
            assert np.array_equal(new[(*slots, untouched)], old[(*slots, untouched)])
            assert not np.array_equal(new[(*rows, slice(0, 2), written)], old[(*rows, slice(0, 2), written)])


def test_cpu_layout_on_the_8_device_mesh():
    hf = hf_llama(kv_heads=2)
    model = ported(hf)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
    ids, mask, pos, seg = left_padded_batch(4, (0, 2, 4, 1))
    with jax.set_mesh(mesh):
        decoding = for_cpu_decoding(model)
        got = cached_logits(decoding, ids, pos, seg)
    layer_spec = tuple(decoding.layers[0].self_attn.q_proj.kernel[...].sharding.spec)
    assert layer_spec == tuple(model.layers.self_attn.q_proj.kernel[...].sharding.spec)[1:]  # placement kept
    diff = max_diff_on_real_tokens(got, hf_logits(hf, ids, mask, pos), mask)
    assert diff <= TOL, diff


def test_generate_uses_the_cpu_layout_and_gives_the_stacked_models_tokens(monkeypatch):
    model = ported(hf_llama(kv_heads=2, tie=True))
    assert decoding_layout(model).unstacked  # this machine is a CPU
    prompts = [[5, 9, 12, 7], [3, 4], [8, 8, 8, 8, 8, 9]]
    sampling = SamplingConfig(max_new_tokens=6)
    ours = generate(model, prompts, sampling, batch_size=2)
    import rolellm_jax.inference.generate as generation

    monkeypatch.setattr(generation, "decoding_layout", lambda m: m)  # the stacked, scanned model
    assert generate(model, prompts, sampling, batch_size=2) == ours
    assert not model.unstacked  # the caller's model is untouched


def in_dtype(model, dtype):
    """The ported params (loaded as float32 arrays) cast to the model's param_dtype."""
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda a: a.astype(dtype), state))
    return model


def weight_sized_moves(hlo: str, min_elements: int) -> list[str]:
    """The compiled program's copy / convert / (dynamic-)slice ops producing >= min_elements values."""
    found = []
    for line in hlo.splitlines():
        match = re.search(r"%([\w.-]*(copy|convert|slice)[\w.-]*) = (\w+)\[([\d,]*)\]", line)
        if match and match.group(1).startswith("bitcast"):
            continue  # a reinterpretation of the same bytes, not a move
        if match and np.prod([int(d) for d in match.group(4).split(",") if d] or [1]) >= min_elements:
            found.append(f"{match.group(1)} {match.group(3)}[{match.group(4)}]")
    return found


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiled_decode_step_moves_no_weight(dtype):
    """A wide enough shape that weights (64 x 192 and up) and activations/cache rows differ in size."""
    hf = hf_llama(kv_heads=2, tie=True)
    model = for_cpu_decoding(in_dtype(ported(hf, dtype=dtype, param_dtype=dtype), dtype))
    cache = model.init_cache(2, 16)
    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, token, cache):
        m = nnx.merge(graphdef, state)
        return m(token, positions=jnp.zeros_like(token), segment_ids=jnp.ones_like(token), cache=cache)

    hlo = step.lower(state, jnp.ones((2, 1), jnp.int32), cache).compile().as_text()
    smallest_weight = 64 * 64  # o_proj [64, 64]; the embedding is 128 x 64
    assert weight_sized_moves(hlo, smallest_weight) == []
    # the stacked model's step does move them (the reason for the layout): the test can fail
    stacked = in_dtype(ported(hf, dtype=dtype, param_dtype=dtype), dtype)
    g2, s2 = nnx.split(stacked)

    @jax.jit
    def stacked_step(state, token, cache):
        m = nnx.merge(g2, state)
        return m(token, positions=jnp.zeros_like(token), segment_ids=jnp.ones_like(token), cache=cache)

    stacked_hlo = stacked_step.lower(s2, jnp.ones((2, 1), jnp.int32), stacked.init_cache(2, 16)).compile().as_text()
    assert weight_sized_moves(stacked_hlo, smallest_weight)


def test_bf16_cache_writes_one_slot_in_place():
    """XLA:CPU upcasts a bf16 dynamic-update-slice to float32 with the whole buffer converted around it: the
    cache write read and rewrote each layer's whole cache per token (models/slice_update.py); with a donated
    cache the step must write only the new slot."""
    hf = hf_llama(kv_heads=2, tie=True)
    model = for_cpu_decoding(in_dtype(ported(hf, dtype="bfloat16", param_dtype="bfloat16"), "bfloat16"))
    graphdef, state = nnx.split(model)

    def step(state, token, cache):
        m = nnx.merge(graphdef, state)
        return m(token, positions=jnp.zeros_like(token), segment_ids=jnp.ones_like(token), cache=cache)

    cache = model.init_cache(2, 64)
    hlo = jax.jit(step, donate_argnums=2).lower(state, jnp.ones((2, 1), jnp.int32), cache).compile().as_text()
    updates = [line for line in hlo.splitlines() if "dynamic-update-slice(" in line]
    assert len(updates) >= 2 * len(model.layers)  # the K and V writes are there
    assert not [line for line in updates if "dynamic-update-slice(%convert" in line]


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_decode_step_runs_every_dense_layer_the_head_and_attention_on_the_cpu_kernels(tie):
    """Per layer one q/k/v, o, gate/up and down call, plus the head (cpu_decode_kernels; the tied embedding kept
    once, as the head's panels); ``packed_kernels=False`` keeps XLA's dots, with the same logits."""
    from rolellm_jax.models.kernels import cpu_decode_kernels
    from rolellm_jax.models.modules import PackedDense, PackedEmbedding

    if not cpu_decode_kernels.available():
        pytest.skip(f"kernel unavailable: {cpu_decode_kernels.unavailable_reason()}")
    hf = hf_llama(kv_heads=2, tie=tie)
    model = for_cpu_decoding(ported(hf))
    assert isinstance(model.embed_tokens if tie else model.lm_head, PackedEmbedding if tie else PackedDense)
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda s, t, c: nnx.merge(graphdef, s)(t, segment_ids=jnp.ones_like(t), cache=c))
    hlo = step.lower(state, jnp.ones((2, 1), jnp.int32), model.init_cache(2, 16)).compile().as_text()
    assert hlo.count('custom_call_target="rolellm_packed_matmul"') == 4 * len(model.layers) + 1
    assert hlo.count('custom_call_target="rolellm_decode_attention"') == len(model.layers)  # the cache in place
    ids, mask, pos, seg = left_padded_batch(2, (0, 3))
    plain = for_cpu_decoding(ported(hf), packed_kernels=False)
    assert not isinstance(plain.layers[0].mlp.down_proj, PackedDense)
    np.testing.assert_allclose(cached_logits(model, ids, pos, seg), cached_logits(plain, ids, pos, seg), atol=1e-5)


def test_bf16_cpu_layout_decodes_a_batch_near_float32():
    """Run, not only compiled (an XLA:CPU dot without a bf16 kernel for its shape fails only at run time)."""
    hf = hf_llama(kv_heads=2, tie=True)
    ids, mask, pos, seg = left_padded_batch(4, (0, 3, 1, 2))
    want = cached_logits(for_cpu_decoding(ported(hf)), ids, pos, seg)
    model = for_cpu_decoding(in_dtype(ported(hf, dtype="bfloat16", param_dtype="bfloat16"), "bfloat16"))
    got = cached_logits(model, ids, pos, seg)
    scale = np.abs(want[mask.astype(bool)]).max()
    assert max_diff_on_real_tokens(got, want, mask) <= 0.05 * scale


def test_16bit_embedding_rows_without_converting_the_table():
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(300, 64)), jnp.bfloat16)
    ids = jnp.asarray([[0, 5, 299], [7, 7, 1]], jnp.int32)
    np.testing.assert_array_equal(embed_rows(table, ids, jnp.bfloat16), jnp.take(table, ids, axis=0))
    f32_table = table.astype(jnp.float32)
    np.testing.assert_array_equal(embed_rows(f32_table, ids, jnp.bfloat16), jnp.take(table, ids, axis=0))
    hlo = jax.jit(lambda t, i: embed_rows(t, i, jnp.bfloat16)).lower(table, ids).compile().as_text()
    assert weight_sized_moves(hlo, 300 * 64) == []
    # gradient: the rows' cotangents added into the table, as jnp.take's own gradient
    cot = jnp.asarray(rng.normal(size=(2, 3, 64)), jnp.bfloat16)
    ours = jax.grad(lambda t: jnp.sum(embed_rows(t, ids, jnp.bfloat16).astype(jnp.float32) * cot))(table)
    plain = jax.grad(lambda t: jnp.sum(jnp.take(t, ids, axis=0).astype(jnp.float32) * cot))(table)
    np.testing.assert_array_equal(ours, plain)


def test_bf16_dense_dot_asks_for_a_float32_result_and_gives_the_bf16_value():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 1, 96)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(96, 160)), jnp.bfloat16)
    dims = (((2,), (0,)), ((), ()))
    ours = cpu_matmul.dot_general(x, w, dims)
    assert ours.dtype == jnp.bfloat16
    np.testing.assert_array_equal(ours, jax.lax.dot_general(x, w, dims))  # XLA:CPU rounds the same f32 sum
    hlo = jax.jit(lambda x, w: cpu_matmul.dot_general(x, w, dims)).lower(x, w).compile().as_text()
    assert weight_sized_moves(hlo, 96 * 160) == []
    plain_hlo = jax.jit(lambda x, w: jax.lax.dot_general(x, w, dims)).lower(x, w).compile().as_text()
    assert weight_sized_moves(plain_hlo, 96 * 160)  # the upcast copy this form avoids
