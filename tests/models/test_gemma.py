"""Gemma 2 and Gemma 3 (text) against transformers on tiny random configs built from its config classes.

Both configs have a sliding window (4 tokens) shorter than the test sequences, GQA, an attention scale
from query_pre_attn_scalar that is not head_dim ** -0.5, and every (1 + w) norm weight randomised; Gemma 2
soft-caps attention scores and logits, Gemma 3 has two rotary bases (a linearly scaled global one) and
its layers in an irregular order. Per variant (fp32, left-padded rows, <= 1e-4 on real tokens): logits
scanned and unrolled, on the 8-device CPU mesh, at 256 tokens (the blocked causal attention, whose
backward must also equal autodiff of one masked attention); greedy generation equal to transformers'
``generate`` (the KV-cache decode with window and soft-cap); HF -> ours -> HF bit-exact; load_model;
a LoRA step on the mesh. Each Gemma detail dropped in turn must fail parity.
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from rolellm_jax import load_model
from rolellm_jax.checkpoints.hf_write import write_hf_checkpoint
from rolellm_jax.checkpoints.safetensors_io import SafetensorsFolder
from rolellm_jax.convert import main as convert
from rolellm_jax.errors import ConfigError
from rolellm_jax.inference.generate import SamplingConfig, generate
from rolellm_jax.models import attention, build_model
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.parallel import sharding
from rolellm_jax.training.aot import compile_for_topology
from rolellm_jax.training.config import LoraConfig, TrainConfig
from rolellm_jax.training.flops import flops_per_token, matmul_params
from rolellm_jax.training.train_step import TrainProgram
from tests.inference.test_generate import NEW, hf_greedy, prompts
from tests.models.test_families import (
    test_train_from_hf_folder_with_lora_exports_the_same_architecture as train_from_hf_folder,
)
from tests.models.test_models import (
    TOL,
    VOCAB,
    forward,
    hf_logits,
    hf_to_tree,
    left_padded_batch,
    load_into,
    max_diff_on_real_tokens,
    our_config,
    ported,
    randomised,
)
from tests.training.test_train import tokenizer_dir  # noqa: F401 (a fixture)

SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=8, num_key_value_heads=2)
GEMMA = dict(head_dim=16, sliding_window=4, query_pre_attn_scalar=24)  # scale 24 ** -0.5, not 16 ** -0.5
GEMMA3_LAYERS = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention"]
GEMMA3_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
    "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0},
}


def _eager(model):
    model.config._attn_implementation = "eager"  # transformers' reference attention (soft-capping included)
    return model


def _gemma_randomised(model, seed: int):
    """randomised(), with the norm weights around 0 (Gemma scales by 1 + w, and initialises w at 0): around
    1 they double every norm's output and the random network amplifies float32 noise past the tolerance."""
    model = randomised(model, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.sub_(1.0)
    return _eager(model)


def hf_gemma2(tie: bool = True, seed: int = 0):
    cfg = Gemma2Config(
        **SHAPE,
        **GEMMA,
        num_hidden_layers=4,  # alternating sliding / full
        attn_logit_softcapping=2.0,  # small enough that the cap bends the randomised scores
        final_logit_softcapping=3.0,
        tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    return _gemma_randomised(Gemma2ForCausalLM(cfg), seed)


def hf_gemma3(tie: bool = True, seed: int = 0):
    cfg = Gemma3TextConfig(
        **SHAPE,
        **GEMMA,
        num_hidden_layers=len(GEMMA3_LAYERS),
        layer_types=GEMMA3_LAYERS,
        rope_parameters=GEMMA3_ROPE,
        tie_word_embeddings=tie,
    )
    return _gemma_randomised(Gemma3ForCausalLM(cfg), seed)


FAMILIES = {
    "gemma2": hf_gemma2,
    "gemma2_untied": lambda: hf_gemma2(tie=False),
    "gemma3": hf_gemma3,
    "gemma3_untied": lambda: hf_gemma3(tie=False),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
    hf = FAMILIES[request.param]()
    return request.param, hf, ported(hf)


def _diff(hf, model, batch=3, pads=(0, 3, 5), length=8) -> float:
    ids, mask, pos, seg = left_padded_batch(batch, pads, length=length)
    return max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(hf, ids, mask, pos), mask)


def test_logits_match_transformers_scanned_and_unrolled(pair):
    name, hf, model = pair
    assert model.cfg.family == name.split("_")[0] and model.cfg.tie_word_embeddings == ("untied" not in name)
    assert model.cfg.sliding_window == 4 and "sliding_attention" in model.cfg.layer_types
    assert _diff(hf, model) <= TOL
    assert _diff(hf, ported(hf, scan_layers=False)) <= TOL


def test_logits_match_transformers_on_8_device_mesh(pair):
    _, hf, _ = pair
    model = ported(hf)  # a fresh copy: the shared one stays on one device
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
        assert _diff(hf, model, batch=4, pads=(0, 3, 1, 5)) <= TOL


def test_greedy_generation_equals_transformers(pair):
    """Prompts of 3..11 tokens + 12 new ones: the 4-token window and the soft-caps act in the cached decode."""
    _, hf, model = pair
    batch = prompts()
    assert generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4) == hf_greedy(hf, batch)


def test_rotary_frequencies_per_layer_type_match_transformers():
    hf = hf_gemma3()
    inputs = ported(hf).per_layer_inputs()
    for i, layer_type in enumerate(GEMMA3_LAYERS):
        theirs = getattr(hf.model.rotary_emb, f"{layer_type}_inv_freq").numpy()
        # float32 pow of numpy and torch may differ in the last bit (here for base 5000)
        np.testing.assert_allclose(np.asarray(inputs["inv_freq"][i]), theirs, rtol=2e-7, atol=0)
    assert list(np.asarray(inputs["window"])[[0, 1]]) == [4, np.iinfo(np.int32).max]


@pytest.mark.parametrize("make", [hf_gemma2, hf_gemma3], ids=["gemma2", "gemma3"])
def test_causal_query_blocks_match_transformers_and_autodiff(make, monkeypatch):
    """256 tokens run as 4 causal query blocks (rows left-padded by 0 and 45): logits equal transformers',
    and the blocks' backward (through the window and the soft-cap) equals autodiff of one masked attention."""
    hf = make()
    model = ported(hf)
    ids, mask, pos, seg = left_padded_batch(pads=(0, 45), length=256)
    assert max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(hf, ids, mask, pos), mask) <= TOL
    graphdef, state = nnx.split(model)

    def grads():
        loss = lambda st: jnp.mean(nnx.merge(graphdef, st)(ids, pos, seg)[mask.astype(bool)] ** 2)  # noqa: E731
        return nnx.to_pure_dict(jax.grad(loss)(state))

    blocked = grads()
    monkeypatch.setattr(attention, "causal_query_blocks", lambda t, min_block=64: 1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), blocked, grads())


# ---------------------------------------------------------------- wrong details fail parity
def _ported_with(hf, **changes):
    """Our model of ``hf``'s weights with config fields changed (the detail it then gets wrong)."""
    cfg = our_config(hf).replace(**changes)
    return load_into(build_model(cfg, rngs=nnx.Rngs(0)), hf_to_tree(hf.state_dict(), cfg))


@pytest.mark.parametrize(
    "make,changes",
    [
        (hf_gemma2, {"attn_logit_softcapping": None}),
        (hf_gemma2, {"final_logit_softcapping": None}),
        (hf_gemma2, {"sliding_window": None}),  # the window ignored
        (hf_gemma3, {"sliding_window": None}),
        (hf_gemma3, {"rope_local_theta": None}),  # the global rotary base on the local layers
        (hf_gemma2, {"query_pre_attn_scalar": None}),  # head_dim ** -0.5
    ],
    ids=["attn-softcap", "final-softcap", "window2", "window3", "local-rope", "scale"],
)
def test_a_dropped_gemma_detail_fails_parity(make, changes):
    hf = make()
    assert _diff(hf, _ported_with(hf)) <= TOL
    assert _diff(hf, _ported_with(hf, **changes)) > 100 * TOL


@pytest.mark.parametrize("make", [hf_gemma2, hf_gemma3], ids=["gemma2", "gemma3"])
def test_norm_offset_dropped_fails_parity(make):
    hf = make()
    model = ported(hf)
    model.norm.plus_one = False  # the final norm scales by w instead of 1 + w
    assert _diff(hf, model) > 100 * TOL


def test_embedding_scale_dropped_fails_parity():
    hf = hf_gemma3()
    model = ported(hf)
    model.scale_embeddings = False
    assert _diff(hf, model) > 100 * TOL


# ---------------------------------------------------------------- conversion, training
@pytest.mark.parametrize("name", ["gemma2", "gemma3_untied"])
def test_round_trip_is_bit_exact_and_load_model_matches(tmp_path, name):
    original = FAMILIES[name]()
    original.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert convert(["hf-to-jax", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")]) == 0
    assert convert(["jax-to-hf", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")]) == 0
    before, after = SafetensorsFolder(tmp_path / "hf"), SafetensorsFolder(tmp_path / "back")
    assert before.names() == after.names()
    for tensor in before.names():
        a, b = before.read(tensor), after.read(tensor)
        assert a.dtype == b.dtype and a.shape == b.shape, tensor
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32), err_msg=tensor)
    reloaded = _eager(AutoModelForCausalLM.from_pretrained(tmp_path / "back"))
    assert type(reloaded) is type(original)
    for key in ("layer_types", "sliding_window", "query_pre_attn_scalar", "rope_parameters", "final_logit_softcapping"):
        assert getattr(reloaded.config, key) == getattr(original.config, key), key
    ids, mask, pos, seg = left_padded_batch(3, (0, 2, 4))
    np.testing.assert_array_equal(hf_logits(reloaded, ids, mask, pos), hf_logits(original, ids, mask, pos))
    for source in (tmp_path / "hf", tmp_path / "ckpt"):
        model, cfg = load_model(source, dtype="float32")
        assert cfg == ported(original).cfg.replace(param_dtype="float32")
        diff = max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(original, ids, mask, pos), mask)
        assert diff <= TOL, f"{source}: {diff}"


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_lora_train_step_on_8_device_mesh(name):
    cfg = ported(FAMILIES[name]()).cfg
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=targets)
    program = TrainProgram.create(cfg, mesh, TrainConfig(global_batch_size=4, warmup_steps=0, lr=1e-2), lora, 16)
    state, frozen = program.init_state(program.init_params(0), 0)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(2, VOCAB, (4, 16)),
        "targets": rng.integers(2, VOCAB, (4, 16)),
        "loss_mask": np.ones((4, 16)),
        "positions": np.tile(np.arange(16), (4, 1)),
        "segment_ids": np.ones((4, 16)),
    }
    batch = {k: jax.device_put(v.astype(np.int32), program.batch_sharding) for k, v in batch.items()}
    step = program.jitted_step()
    state, first = step(state, frozen, batch)
    state, second = step(state, frozen, batch)
    assert float(second["loss"]) < float(first["loss"])  # the adapters learn the batch
    n_matmul = matmul_params(program.abstract_params)
    assert flops_per_token(cfg, n_matmul, 16) > 6 * n_matmul


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_train_step_compiles_for_a_tpu_topology(family):
    """aot (rolellm_jax/aot.py): the LoRA train step of a Gemma family compiles for v5p on this CPU."""
    from tests.training.test_aot import TINY as AOT_TINY

    args = ["--config", "launch/configs/rolellama-7b.yaml", *AOT_TINY, f"--model.family={family}"]
    args += ["--model.head_dim=32", "--model.sliding_window=16", "--model.query_pre_attn_scalar=32"]
    result = compile_for_topology([*args, "--lora.enabled=true", "--lora.targets=[q_proj,v_proj]"], "v5p:2x2x1")
    assert result["fits"] and result["params"] > 0


# ---------------------------------------------------------------- config fields refused by name
def _hf_dict(make, **changes) -> dict:
    return {**make().config.to_dict(), **changes}


@pytest.mark.parametrize(
    "make,changes,needle",
    [
        (hf_gemma3, {"architectures": ["Gemma3ForConditionalGeneration"]}, "only the text model Gemma3ForCausalLM"),
        (hf_gemma3, {"layer_types": ["chunked_attention", *GEMMA3_LAYERS[1:]]}, r"layer_types has \['chunked_"),
        (hf_gemma2, {"hidden_activation": "gelu"}, "hidden_activation='gelu' is not supported"),
        (hf_gemma3, {"use_bidirectional_attention": True}, "use_bidirectional_attention=true"),
        (hf_gemma2, {"attention_bias": True}, "attention_bias=true is not supported for Gemma2ForCausalLM"),
        (
            hf_gemma3,
            {"rope_parameters": {**GEMMA3_ROPE, "full_attention": {"rope_type": "yarn", "factor": 2.0}}},
            "yarn",
        ),
    ],
)
def test_config_fields_we_would_mishandle_are_refused(make, changes, needle):
    with pytest.raises(ConfigError, match=needle):
        ModelConfig.from_hf_config(_hf_dict(make, **changes), source="x/config.json")


@pytest.mark.parametrize("impl", ["cudnn", "splash"])
def test_attention_soft_capping_with_another_kernel_is_refused(impl):
    with pytest.raises(ConfigError, match=f"attention_impl='{impl}' does not implement attn_logit_softcapping"):
        our_config(hf_gemma2(), attention_impl=impl, dtype="bfloat16")


def test_a_hub_style_gemma3_config_reads_as_transformers_does():
    """Gemma 3 config.json files on the Hub predate rope_parameters and layer_types: rope_theta,
    rope_local_base_freq, rope_scaling and sliding_window_pattern; we read what transformers' model runs."""
    hub = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        **SHAPE,
        **GEMMA,
        "num_hidden_layers": 7,
        "hidden_activation": "gelu_pytorch_tanh",
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window_pattern": 6,
    }
    cfg = ModelConfig.from_hf_config(hub)
    theirs = Gemma3TextConfig(**{k: v for k, v in hub.items() if k != "model_type"})
    assert (
        list(cfg.layer_types)
        == theirs.layer_types
        == [*["sliding_attention"] * 5, "full_attention"] + ["sliding_attention"]
    )
    assert (cfg.rope_theta, cfg.rope_local_theta, cfg.rope_scaling["factor"]) == (1e6, 1e4, 8.0)
    assert cfg.to_hf_config()["rope_parameters"] == theirs.rope_parameters


def test_train_from_hf_folder_with_lora_exports_the_same_architecture(tokenizer_dir, tmp_path):
    """--model.init=<a Gemma 3 HF folder>: trains with the gemma default chat format, exports, and
    jax-to-hf gives a folder transformers loads as Gemma3ForCausalLM with the trained model's logits."""
    train_from_hf_folder(tokenizer_dir, tmp_path, make=hf_gemma3)


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_a_config_made_by_flags_exports_what_the_model_computes(tmp_path, family):
    """A Gemma config without layer_types (e.g. from --model.* flags) applies its window in every layer, and
    jax-to-hf writes it so: transformers computes the same logits from the written folder."""
    cfg = ModelConfig(family=family, **SHAPE, num_hidden_layers=2, head_dim=16, sliding_window=3, dtype="float32")
    model = build_model(cfg, rngs=nnx.Rngs(0))
    params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    write_hf_checkpoint(params, cfg, tmp_path)
    hf = _eager(AutoModelForCausalLM.from_pretrained(tmp_path))
    assert hf.config.layer_types == ["sliding_attention"] * 2
    assert _diff(hf, model) <= TOL
    assert _diff(hf, _ported_with(hf, sliding_window=None)) > 100 * TOL  # the window matters here


def test_gemma_fields_on_another_family_are_refused():
    with pytest.raises(ConfigError, match="attn_logit_softcapping: only for the families gemma2, gemma3"):
        ModelConfig(family="llama", attn_logit_softcapping=50.0)
    with pytest.raises(ConfigError, match="rope_local_theta: only for the family gemma3"):
        ModelConfig(family="gemma2", rope_local_theta=1e4)
