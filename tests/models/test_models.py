"""Our Flax LLaMA / GLM against transformers' PyTorch models on tiny random configs (fp32, 1e-4).

Every HF parameter (norm scales and biases included) is randomised so that no weight can hide
behind a default of ones or zeros; weights move into our tree by renaming + transposing only
(the Hugging Face names and shapes of checkpoints/tensor_layout.py). Rows are left-padded where noted
and compared on real tokens only.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import GlmConfig, LlamaConfig
from transformers import GlmForCausalLM as HFGlm
from transformers import LlamaForCausalLM as HFLlama

from rolellm_jax.models import CausalLM, attention, build_model
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.models.kernels.blocked_attention import causal_query_blocks
from rolellm_jax.models.rotary import rotary_inv_freq
from rolellm_jax.parallel import sharding
from tests.helpers.jaxpr_eqns import all_eqns
from tests.helpers.tiny_models import tiny_config, tiny_hf_config

TOL = 1e-4
VOCAB, T = 128, 8
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


# ---------------------------------------------------------------- helpers
def hf_llama(kv_heads: int = 2, tie: bool = False, rope: dict | None = None, seed: int = 0):
    cfg = tiny_hf_config(
        LlamaConfig,
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=8,
        num_key_value_heads=kv_heads,
        head_dim=8,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 500.0},
    )
    return randomised(HFLlama(cfg), seed)


def hf_glm(partial: float = 0.5, seed: int = 0):
    cfg = tiny_hf_config(
        GlmConfig,
        vocab_size=VOCAB,
        head_dim=8,
        partial_rotary_factor=partial,
        attention_bias=True,
        rms_norm_eps=1e-5,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return randomised(HFGlm(cfg), seed)


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                # large enough that attention is peaked: a rotary mistake must move the logits
                p.copy_((0.1 if name.endswith("bias") else 0.15) * torch.randn_like(p))
    return model.eval().float()


def our_config(hf_model, **runtime) -> ModelConfig:
    runtime.setdefault("dtype", "float32")
    return ModelConfig.from_hf_config(hf_model.config.to_dict(), **runtime)


def hf_to_tree(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict:
    """HF names -> our tree: drop "model.", weight -> kernel (transposed) or scale, stack layers."""
    sd = {k: v.detach().numpy() for k, v in state_dict.items()}

    def leaf(name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
        if name.endswith("norm.weight"):
            return name[: -len("weight")] + "scale", array
        if name.endswith(".weight"):
            return name[: -len("weight")] + "kernel", array.T
        return name, array

    def put(tree: dict, dotted: str, value) -> None:
        *parents, last = dotted.split(".")
        for p in parents:
            tree = tree.setdefault(p, {})
        tree[last] = value

    tree: dict = {}
    put(tree, "embed_tokens.embedding", sd["model.embed_tokens.weight"])
    put(tree, "norm.scale", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        put(tree, "lm_head.kernel", sd["lm_head.weight"].T)
    prefix = "model.layers.0."
    for name in [k[len(prefix) :] for k in sd if k.startswith(prefix)]:
        per_layer = [leaf(name, sd[f"model.layers.{i}.{name}"]) for i in range(cfg.num_hidden_layers)]
        put(tree, "layers." + per_layer[0][0], np.stack([a for _, a in per_layer]))
    return tree


def load_into(model: CausalLM, tree: dict) -> CausalLM:
    state = nnx.state(model, nnx.Param)
    ours = jax.tree.map(np.shape, nnx.to_pure_dict(state))
    assert ours == jax.tree.map(np.shape, tree), "parameter tree differs from the Hugging Face layout"
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, tree))
    nnx.update(model, state)
    return model


def ported(hf_model, model_cls: type[CausalLM] | None = None, **runtime) -> CausalLM:
    cfg = our_config(hf_model, **runtime)
    model = (model_cls or type(build_model(cfg, rngs=nnx.Rngs(0))))(cfg, rngs=nnx.Rngs(0))
    return load_into(model, hf_to_tree(hf_model.state_dict(), cfg))


def left_padded_batch(batch: int = 2, pads: tuple[int, ...] = (0, 3), seed: int = 1, length: int = T):
    """ids, attention mask, positions (cumsum - 1), segment ids; row r has pads[r] left pads."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, VOCAB, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    for r in range(batch):
        mask[r, : pads[r % len(pads)]] = 0
    ids[mask == 0] = 0
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    return ids, mask, positions, mask.copy()


def hf_logits(hf_model, ids, mask, positions) -> np.ndarray:
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions, dtype=torch.long),
        )
    return out.logits.float().numpy()


@nnx.jit
def forward(model, ids, positions, segment_ids):
    return model(ids, positions=positions, segment_ids=segment_ids)


def max_diff_on_real_tokens(ours, theirs, mask) -> float:
    return float(np.max(np.abs(np.asarray(ours) - theirs)[mask.astype(bool)]))


def assert_parity(hf_model, model, batch=2, pads=(0, 3)):
    ids, mask, pos, seg = left_padded_batch(batch, pads)
    diff = max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(hf_model, ids, mask, pos), mask)
    assert diff <= TOL, f"max |ours - HF| = {diff:.2e} > {TOL}"


# ---------------------------------------------------------------- parity with transformers
@pytest.mark.parametrize(
    "kv_heads,tie,rope",
    [(1, False, None), (2, True, None), (4, False, LLAMA3_ROPE), (8, True, None)],
    ids=["mqa-untied", "gqa2-tied", "gqa4-llama3rope", "mha-tied"],
)
def test_llama_matches_transformers(kv_heads, tie, rope):
    hf = hf_llama(kv_heads, tie, rope)
    assert_parity(hf, ported(hf))


@pytest.mark.parametrize("partial", [0.5, 1.0])
def test_glm_matches_transformers(partial):
    hf = hf_glm(partial)
    assert ported(hf).cfg.attention_bias
    assert_parity(hf, ported(hf))


def test_rotary_frequencies_match_transformers():
    for hf in (hf_llama(rope=LLAMA3_ROPE), hf_glm(0.5)):
        ours = rotary_inv_freq(our_config(hf))
        np.testing.assert_array_equal(ours, hf.model.rotary_emb.inv_freq.numpy())


def test_wrong_rotary_convention_fails_parity():
    """Guard for the tests themselves: interleaved rotary on LLaMA weights must be far off."""

    class InterleavedLlama(CausalLM):
        rotary_layout = "interleaved"

    hf = hf_llama(kv_heads=2)
    ids, mask, pos, seg = left_padded_batch()
    wrong = forward(ported(hf, InterleavedLlama), ids, pos, seg)
    diff = max_diff_on_real_tokens(wrong, hf_logits(hf, ids, mask, pos), mask)
    print(f"wrong rotary convention: max |ours - HF| = {diff:.3f}")
    assert diff > 1000 * TOL


@pytest.mark.parametrize("family", ["llama", "glm"])
def test_parity_on_8_device_mesh(family):
    assert jax.device_count() == 8
    hf = hf_llama(kv_heads=2) if family == "llama" else hf_glm(0.5)
    model = ported(hf)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
        q_kernel = model.layers.self_attn.q_proj.kernel[...]
        assert q_kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
        assert_parity(hf, model, batch=4, pads=(0, 3, 1, 5))


# ---------------------------------------------------------------- internal equivalences
@pytest.fixture(scope="module")
def llama_pair():
    hf = hf_llama(kv_heads=2)
    return hf, ported(hf)


def test_scan_unrolled_and_remat_agree(llama_pair):
    """Same stacked params: scan on/off, every remat policy and both weight-gradient layouts give the
    same logits and grads."""
    hf, base = llama_pair
    ids, _, pos, seg = left_padded_batch()
    params = nnx.state(base, nnx.Param)

    def loss_and_grad(**runtime):
        model = build_model(dataclasses.replace(base.cfg, **runtime), rngs=nnx.Rngs(1))
        nnx.update(model, params)
        graphdef, state = nnx.split(model)

        @jax.jit
        def f(state):
            return jnp.mean(nnx.merge(graphdef, state)(ids, pos, seg) ** 2)

        loss, grads = jax.value_and_grad(f)(state)
        return loss, nnx.to_pure_dict(grads)

    ref_loss, ref_grads = loss_and_grad(scan_layers=True)
    for runtime in (
        {"scan_layers": False},
        {"remat_policy": "full"},
        {"scan_layers": False, "remat_policy": "dots_saveable"},
        # the CPU weight-gradient layout (models/kernels/cpu_matmul.py), alone and under remat
        {"weight_grad": "cpu"},
        {"weight_grad": "cpu", "remat_policy": "dots_with_no_batch_dims_saveable"},
        {"weight_grad": "cpu", "scan_layers": False, "remat_policy": "full"},
    ):
        loss, grads = loss_and_grad(**runtime)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, err_msg=str(runtime))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), grads, ref_grads)


def test_causal_query_blocks_match_transformers(llama_pair):
    """At 256 tokens attention runs as 4 causal query blocks (grouped-query: 8 heads, 2 kv heads):
    logits still equal transformers'."""
    hf, model = llama_pair
    assert causal_query_blocks(256) == 4 and causal_query_blocks(128) == 2 and causal_query_blocks(T) == 1
    ids, mask, pos, seg = left_padded_batch(pads=(0, 45), length=256)
    diff = max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(hf, ids, mask, pos), mask)
    assert diff <= TOL, f"max |ours - HF| = {diff:.2e} > {TOL}"


@pytest.mark.parametrize("remat_policy", ["none", "dots_with_no_batch_dims_saveable", "full"])
def test_causal_query_blocks_grads_equal_one_block(llama_pair, monkeypatch, remat_policy):
    """Packed rows whose examples cross block borders: blocked attention (flash-style backward) and
    one-block attention (autodiff of jax.nn.dot_product_attention) give equal grads, also under remat."""
    _, ported_model = llama_pair
    model = build_model(dataclasses.replace(ported_model.cfg, remat_policy=remat_policy), rngs=nnx.Rngs(1))
    nnx.update(model, nnx.state(ported_model, nnx.Param))
    ids = np.random.default_rng(4).integers(2, VOCAB, (2, 128)).astype(np.int32)
    seg = np.repeat(np.searchsorted([0, 20, 70, 121], np.arange(128), side="right")[None], 2, 0).astype(np.int32)
    seg[:, 121:] = 0  # trailing padding
    pos = np.concatenate([np.arange(n) for n in (20, 50, 51, 7)])[None].repeat(2, 0).astype(np.int32)
    graphdef, state = nnx.split(model)

    def grads():
        return nnx.to_pure_dict(jax.grad(lambda st: jnp.mean(nnx.merge(graphdef, st)(ids, pos, seg) ** 2))(state))

    blocked = grads()
    monkeypatch.setattr(attention, "causal_query_blocks", lambda t, min_block=64: 1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), blocked, grads())


def test_packed_segments_equal_examples_run_alone(llama_pair):
    _, model = llama_pair
    rng = np.random.default_rng(3)
    a, b = rng.integers(2, VOCAB, 3), rng.integers(2, VOCAB, 4)
    packed = np.concatenate([a, b, [0]])[None].astype(np.int32)
    segment_ids = np.array([[1, 1, 1, 2, 2, 2, 2, 0]], np.int32)
    positions = np.array([[0, 1, 2, 0, 1, 2, 3, 0]], np.int32)
    packed_logits = np.asarray(forward(model, packed, positions, segment_ids))
    alone_a = np.asarray(model(jnp.asarray(a[None], jnp.int32)))
    alone_b = np.asarray(model(jnp.asarray(b[None], jnp.int32)))
    np.testing.assert_allclose(packed_logits[0, :3], alone_a[0], atol=TOL)
    np.testing.assert_allclose(packed_logits[0, 3:7], alone_b[0], atol=TOL)
    assert np.isfinite(packed_logits).all()


@pytest.mark.parametrize("family", ["llama", "glm"])
def test_kv_cache_decode_equals_full_forward(family, llama_pair):
    """Left-padded prefill of 5 tokens, then 3 one-token steps == one full forward of 8 tokens.

    GLM runs unrolled on the 2x2x2 mesh, so both layer-stack paths and a sharded cache are covered.
    """
    if family == "llama":
        model, batch, pads, mesh = llama_pair[1], 2, (0, 2), None
    else:
        model, batch, pads = ported(hf_glm(0.5), scan_layers=False), 4, (0, 2, 4, 1)
        mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
        nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
    ids, mask, pos, seg = left_padded_batch(batch, pads)

    @nnx.jit
    def step(model, ids, pos, seg, cache):
        return model(ids, positions=pos, segment_ids=seg, cache=cache)

    with jax.set_mesh(mesh) if mesh else contextlib.nullcontext():
        full = np.asarray(forward(model, ids, pos, seg))
        cache = model.init_cache(batch, max_len=T + 2)
        prefill = 5
        logits, cache = step(model, ids[:, :prefill], pos[:, :prefill], seg[:, :prefill], cache)
        got = [np.asarray(logits)]
        for t in range(prefill, T):
            logits, cache = step(model, ids[:, t : t + 1], pos[:, t : t + 1], seg[:, t : t + 1], cache)
            got.append(np.asarray(logits))
    assert int(cache["index"]) == T
    if mesh:
        assert cache["k"].sharding.spec[1] == ("data", "fsdp")
    diff = max_diff_on_real_tokens(np.concatenate(got, axis=1), full, mask)
    assert diff <= TOL, diff


# ---------------------------------------------------------------- layout, dtypes, metadata
def test_param_tree_layout_and_logical_axes():
    cfg = tiny_config(
        family="glm", intermediate_size=48, num_hidden_layers=3, attention_bias=True, partial_rotary_factor=0.5
    )
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    expected = {
        "embed_tokens.embedding": ((64, 32), ("vocab", "embed")),
        "layers.input_layernorm.scale": ((3, 32), ("layers", "norm")),
        "layers.post_attention_layernorm.scale": ((3, 32), ("layers", "norm")),
        "layers.self_attn.q_proj.kernel": ((3, 32, 32), ("layers", "embed", "heads")),
        "layers.self_attn.q_proj.bias": ((3, 32), ("layers", "heads")),
        "layers.self_attn.k_proj.kernel": ((3, 32, 16), ("layers", "embed", "kv_heads")),
        "layers.self_attn.k_proj.bias": ((3, 16), ("layers", "kv_heads")),
        "layers.self_attn.v_proj.kernel": ((3, 32, 16), ("layers", "embed", "kv_heads")),
        "layers.self_attn.v_proj.bias": ((3, 16), ("layers", "kv_heads")),
        "layers.self_attn.o_proj.kernel": ((3, 32, 32), ("layers", "heads", "embed")),
        "layers.mlp.gate_up_proj.kernel": ((3, 32, 96), ("layers", "embed", "mlp")),
        "layers.mlp.down_proj.kernel": ((3, 48, 32), ("layers", "mlp", "embed")),
        "norm.scale": ((32,), ("norm",)),
        "lm_head.kernel": ((32, 64), ("embed", "vocab")),
    }
    got = {k: (tuple(v.shape), tuple(v.get_metadata()["out_sharding"])) for k, v in flat.items()}
    assert got == expected
    assert all(v.dtype == jnp.float32 for v in flat.values())

    llama = nnx.eval_shape(
        lambda: build_model(
            cfg.replace(family="llama", attention_bias=False, tie_word_embeddings=True), rngs=nnx.Rngs(0)
        )
    )
    names = set(nnx.to_pure_dict(nnx.state(llama, nnx.Param))["layers"]["mlp"])
    assert names == {"gate_proj", "up_proj", "down_proj"}
    assert "lm_head" not in nnx.to_pure_dict(nnx.state(llama, nnx.Param))


def test_graphdef_hashes_with_hf_style_config_fields():
    """jax.jit(static_argnames="graphdef") needs a hashable graph; HF configs carry dicts and lists."""
    cfg = our_config(hf_llama(rope=LLAMA3_ROPE)).replace(eos_token_id=[1, 2])
    first, second = (nnx.graphdef(build_model(cfg, rngs=nnx.Rngs(seed))) for seed in (0, 1))
    assert hash(first) == hash(second) and first == second
    assert first != nnx.graphdef(build_model(cfg.replace(eos_token_id=[1]), rngs=nnx.Rngs(0)))
    assert build_model(cfg, rngs=nnx.Rngs(0)).cfg == cfg


def dot_operands(jaxpr) -> list[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]]:
    """(operand dtypes, operand shapes) of every dot_general in a jaxpr and its sub-jaxprs."""
    return [
        (tuple(str(v.aval.dtype) for v in eqn.invars), tuple(v.aval.shape for v in eqn.invars))
        for eqn in all_eqns(jaxpr)
        if eqn.primitive.name == "dot_general"
    ]


def test_lm_head_backward_runs_in_the_compute_dtype(llama_pair):
    """The LM head's matmul (cpu_matmul.matmul without the CPU layout): with float32 compute, a
    plain einsum's value and grads; with bf16 compute, float32 logits, grads within bf16 rounding,
    and all three vocabulary-sized matmuls of the model's forward and backward on bf16 operands (a
    float32 cotangent made the two backward GEMMs float32 x float32)."""
    from rolellm_jax.models.kernels import cpu_matmul

    def float32_logits(x, w):
        return cpu_matmul.matmul(x, w, jnp.float32, cpu_layout=False)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(16, 40)), jnp.float32)

    def plain(x, w):
        return jnp.einsum("btd,dv->btv", x, w, preferred_element_type=jnp.float32)

    def value_and_grads(fn, x, w):
        return jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), argnums=(0, 1))(x, w)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
        value_and_grads(float32_logits, x, w),
        value_and_grads(plain, x, w),
    )
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    assert float32_logits(xb, wb).dtype == jnp.float32
    (_, ours), (_, ref) = value_and_grads(float32_logits, xb, wb), value_and_grads(plain, xb, wb)
    for got, want in zip(ours, ref):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(
            np.asarray(got, np.float32),
            np.asarray(want, np.float32),
            atol=2e-2 * float(np.max(np.abs(np.asarray(want, np.float32)))),
        )

    _, model32 = llama_pair
    graphdef, params = nnx.split(build_model(model32.cfg.replace(dtype="bfloat16"), rngs=nnx.Rngs(0)))
    ids, _, pos, seg = left_padded_batch()
    grad_jaxpr = jax.make_jaxpr(jax.grad(lambda p: forward(nnx.merge(graphdef, p), ids, pos, seg).sum()))(params)
    head_dots = [dtypes for dtypes, shapes in dot_operands(grad_jaxpr.jaxpr) if any(VOCAB in s for s in shapes)]
    assert head_dots == [("bfloat16", "bfloat16")] * 3


def test_bf16_compute_with_fp32_params_is_close(llama_pair):
    _, model32 = llama_pair
    model16 = build_model(model32.cfg.replace(dtype="bfloat16"), rngs=nnx.Rngs(0))
    nnx.update(model16, nnx.state(model32, nnx.Param))
    ids, mask, pos, seg = left_padded_batch()
    ref, got = forward(model32, ids, pos, seg), forward(model16, ids, pos, seg)
    assert got.dtype == jnp.float32
    assert model16.layers.self_attn.q_proj.kernel[...].dtype == jnp.float32
    scale = float(np.max(np.abs(np.asarray(ref))))
    assert max_diff_on_real_tokens(got, np.asarray(ref), mask) < 0.02 * scale


def test_bad_runtime_settings_are_refused_in_one_line():
    from rolellm_jax.errors import ConfigError

    one_layer = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    for runtime, needle in [
        ({"remat_policy": "sometimes"}, "remat_policy='sometimes'"),
        ({"attention_impl": "flash"}, "attention_impl='flash'"),
        ({"attention_impl": "cudnn", "dtype": "float32"}, "needs dtype bfloat16"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            build_model(tiny_config(**one_layer, **runtime), rngs=nnx.Rngs(0))
    from rolellm_jax.models import ModelInputError

    model = build_model(tiny_config(**one_layer, num_key_value_heads=1), rngs=nnx.Rngs(0))
    with pytest.raises(ModelInputError, match=r"input_ids must be \[batch, seq\], got shape \(5,\)"):
        model(jnp.ones((5,), jnp.int32))
    with pytest.raises(ModelInputError, match=r"segment_ids has shape \(1, 4\), expected"):
        model(jnp.ones((1, 5), jnp.int32), segment_ids=jnp.ones((1, 4), jnp.int32))
    with pytest.raises(ModelInputError, match="do not fit a KV cache of max_len 3"):
        model(jnp.ones((1, 5), jnp.int32), cache=model.init_cache(1, 3))
    splash = build_model(model.cfg.replace(attention_impl="splash"), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="multiple of 128, got 5"):
        splash(jnp.ones((1, 5), jnp.int32))
    with pytest.raises(ConfigError, match="only rope_type 'llama3'"):
        rotary_inv_freq(ModelConfig(rope_scaling={"rope_type": "yarn", "factor": 2.0}))


@pytest.mark.parametrize("on_mesh", [False, True], ids=["one-device", "mesh-2x2x2"])
def test_splash_kernel_matches_xla_attention(on_mesh):
    """The TPU splash kernel (Pallas interpret mode on CPU) gives the XLA path's logits and grads."""
    cfg = tiny_config(vocab_size=VOCAB, dtype="float32")
    xla_model = build_model(cfg, rngs=nnx.Rngs(0))
    splash_model = build_model(cfg.replace(attention_impl="splash"), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(5)
    ids = rng.integers(0, VOCAB, (4, 128)).astype(np.int32)
    segment_ids = np.ones((4, 128), np.int32)
    segment_ids[1, :37] = 0  # left padding
    segment_ids[2, 60:] = 2  # two packed examples
    positions = np.where(segment_ids[2] == 2, np.arange(128) - 60, np.arange(128))[None].repeat(4, 0)
    positions[1] = np.clip(np.arange(128) - 37, 0, None)
    real = segment_ids != 0

    def loss_and_grads(model):
        graphdef, state = nnx.split(model)

        def loss(state):
            logits = nnx.merge(graphdef, state)(ids, positions, segment_ids)
            return jnp.sum(jnp.where(real[..., None], logits, 0.0) ** 2) / real.sum(), logits

        (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(state)
        return np.asarray(logits), nnx.to_pure_dict(grads)

    if on_mesh:
        mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
        with jax.set_mesh(mesh):
            ref_logits, ref_grads = loss_and_grads(xla_model)
            logits, grads = loss_and_grads(splash_model)
    else:
        ref_logits, ref_grads = loss_and_grads(xla_model)
        logits, grads = loss_and_grads(splash_model)
    assert np.max(np.abs(logits - ref_logits)[real]) <= TOL
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), grads, ref_grads)


def test_cpu_weight_grad_matmul_equals_xla_grads():
    """models/kernels/cpu_matmul.py: same value and grads as a plain matmul, whichever operand it transposes;
    bf16 inputs with float32 output (the LM head) give grads in the inputs' dtypes."""
    from rolellm_jax.models.kernels import cpu_matmul

    rng = np.random.default_rng(0)
    for d_in, d_out in ((16, 40), (40, 16)):  # transposes x, then dy (the narrower one)
        x = jnp.asarray(rng.normal(size=(2, 5, d_in)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(d_in, d_out)), jnp.float32)
        ours = jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(cpu_matmul.matmul(x, w))), argnums=(0, 1))(x, w)
        plain = jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(x @ w)), argnums=(0, 1))(x, w)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, plain)
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = cpu_matmul.matmul(xb, wb, jnp.float32)
    dx, dw = jax.grad(lambda x, w: jnp.sum(cpu_matmul.matmul(x, w, jnp.float32)), argnums=(0, 1))(xb, wb)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.float32, jnp.bfloat16, jnp.bfloat16)
