"""Qwen2, Qwen3, Mistral and GLM-4-0414 against transformers on tiny random configs built from its config classes.

Per family (fp32, left-padded rows, <= 1e-4 on real tokens): logits on one device and on the
8-device CPU mesh, HF -> ours -> HF bit-exact through the converter (and transformers loads the
result as the same class), load_model from the HF folder, greedy generation equal to transformers'
``generate``, and a LoRA train step on the mesh. A deliberately wrong detail (q/k norms skipped,
q/k/v biases dropped, post norms skipped, sliding window ignored) must fail parity, and config fields we
would mishandle are refused by name.
"""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from transformers import (
    AutoModelForCausalLM,
    Glm4Config,
    Glm4ForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from rolellm_jax import load_model
from rolellm_jax.checkpoints.safetensors_io import SafetensorsFolder
from rolellm_jax.convert import main as convert
from rolellm_jax.errors import ConfigError
from rolellm_jax.inference.generate import SamplingConfig, generate
from rolellm_jax.models import attention
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.parallel import sharding
from rolellm_jax.training.aot import compile_for_topology
from rolellm_jax.training.config import LoraConfig, TrainConfig
from rolellm_jax.training.flops import flops_per_token, matmul_params
from rolellm_jax.training.run import run
from rolellm_jax.training.run_config import parse_args
from rolellm_jax.training.train_step import TrainError, TrainProgram
from tests.inference.test_generate import NEW, hf_greedy, prompts
from tests.models.test_models import (
    TOL,
    VOCAB,
    assert_parity,
    forward,
    hf_logits,
    left_padded_batch,
    max_diff_on_real_tokens,
    ported,
    randomised,
)
from tests.training.test_train import tiny_args, tokenizer_dir  # noqa: F401 (a fixture)

SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8)


def hf_qwen2(tie: bool = False, seed: int = 0):
    cfg = Qwen2Config(**SHAPE, num_key_value_heads=2, tie_word_embeddings=tie, rope_parameters=_rope(1000.0))
    return randomised(Qwen2ForCausalLM(cfg), seed)


def hf_qwen3(tie: bool = False, seed: int = 0):
    # head_dim 16 with 8 heads of a 64-wide model: q is 128 wide, so head_dim cannot be derived
    cfg = Qwen3Config(**SHAPE, num_key_value_heads=4, head_dim=16, tie_word_embeddings=tie, rope_parameters=_rope())
    return randomised(Qwen3ForCausalLM(cfg), seed)


def hf_mistral(sliding_window: int | None = None, seed: int = 0):
    cfg = MistralConfig(**SHAPE, num_key_value_heads=2, head_dim=8, sliding_window=sliding_window)
    return randomised(MistralForCausalLM(cfg), seed)


def hf_glm4(seed: int = 0):
    rope = {"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5}
    cfg = Glm4Config(**SHAPE, num_key_value_heads=2, head_dim=8, rope_parameters=rope, pad_token_id=0, eos_token_id=1)
    return randomised(Glm4ForCausalLM(cfg), seed)


def _rope(theta: float = 500.0) -> dict:
    return {"rope_type": "default", "rope_theta": theta}


FAMILIES = {
    "qwen2": hf_qwen2,
    "qwen2_tied": lambda: hf_qwen2(tie=True),
    "qwen3": hf_qwen3,
    "qwen3_tied": lambda: hf_qwen3(tie=True),
    "mistral": hf_mistral,
    "glm4": hf_glm4,
    "mistral_window": lambda: hf_mistral(sliding_window=4),  # shorter than the test sequences
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request):
    hf = FAMILIES[request.param]()
    return request.param, hf, ported(hf)


def test_logits_match_transformers(pair):
    name, hf, model = pair
    assert model.cfg.family == name.split("_")[0]
    assert model.cfg.attention_bias == name.startswith(("qwen2", "glm4"))
    assert_parity(hf, model, batch=3, pads=(0, 3, 5))


def test_logits_match_transformers_on_8_device_mesh(pair):
    _, hf, model = pair
    model = ported(hf)  # a fresh copy: the shared one stays on one device
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
        assert_parity(hf, model, batch=4, pads=(0, 3, 1, 5))


def test_greedy_generation_equals_transformers(pair):
    _, hf, model = pair
    batch = prompts()
    assert generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4) == hf_greedy(hf, batch)


@pytest.mark.parametrize("name", ["qwen2_tied", "qwen3", "mistral_window", "glm4"])
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
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert type(reloaded) is type(original)
    assert getattr(reloaded.config, "sliding_window", None) == getattr(original.config, "sliding_window", None)
    ids, mask, pos, seg = left_padded_batch(3, (0, 2, 4))
    np.testing.assert_array_equal(hf_logits(reloaded, ids, mask, pos), hf_logits(original, ids, mask, pos))
    for source in (tmp_path / "hf", tmp_path / "ckpt"):
        model, cfg = load_model(source, dtype="float32")
        assert cfg == ported(original).cfg.replace(param_dtype="float32")
        diff = max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(original, ids, mask, pos), mask)
        assert diff <= TOL, f"{source}: {diff}"


# ---------------------------------------------------------------- wrong details fail parity
def _parity_diff(hf, model) -> float:
    ids, mask, pos, seg = left_padded_batch()
    return max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(hf, ids, mask, pos), mask)


def test_skipped_qk_norm_fails_parity():
    hf = hf_qwen3()
    model = ported(hf)
    model.layers.self_attn.qk_norm = False  # the norms' weights stay loaded but are not applied
    assert _parity_diff(hf, model) > 1000 * TOL


def test_dropped_qkv_bias_fails_parity():
    hf = hf_qwen2()
    model = ported(hf)
    for proj in ("q_proj", "k_proj", "v_proj"):
        bias = getattr(model.layers.self_attn, proj).bias
        bias[...] = 0 * bias[...]
    assert _parity_diff(hf, model) > 1000 * TOL


def test_skipped_post_norms_fail_parity():
    hf = hf_glm4()
    model = ported(hf)
    model.layers.post_norms = False
    assert _parity_diff(hf, model) > 1000 * TOL


# ---------------------------------------------------------------- sliding window, training
def test_sliding_window_on_causal_query_blocks_matches_transformers(monkeypatch):
    """256 tokens run as 4 causal query blocks with a 100-token window (rows left-padded by 0 and 45):
    logits equal transformers', and the blocks' backward equals autodiff of one masked attention."""
    hf = hf_mistral(sliding_window=100)
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


def test_ignored_sliding_window_fails_parity():
    hf = hf_mistral(sliding_window=3)
    model = ported(hf)
    assert _parity_diff(hf, model) <= TOL
    model.layers.self_attn.window = None
    assert _parity_diff(hf, model) > 1000 * TOL


def test_splash_attention_with_a_sliding_window_is_refused():
    model = ported(hf_mistral(sliding_window=3), attention_impl="splash")
    with pytest.raises(ConfigError, match="does not implement sliding_window"):
        model(jnp.ones((1, 128), jnp.int32))


@pytest.mark.parametrize("name", ["qwen2_tied", "qwen3", "mistral", "glm4"])
def test_lora_train_step_on_8_device_mesh(name):
    cfg = ported(FAMILIES[name]()).cfg
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    mlp = ["gate_up_proj"] if name == "glm4" else ["gate_proj", "up_proj"]
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", *mlp, "down_proj"]
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


# ---------------------------------------------------------------- config fields refused by name
def _hf_dict(make, **changes) -> dict:
    return {**make().config.to_dict(), **changes}


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"architectures": ["OlmoForCausalLM"]}, r"unsupported architecture \['OlmoForCausalLM'\]; supported: "),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "unsupported rope scaling"),
        ({"mlp_bias": True}, "mlp_bias=true"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"attention_bias": True}, "attention_bias=true is not supported for Qwen3ForCausalLM"),
        ({"use_sliding_window": True, "sliding_window": 8}, "use_sliding_window=true"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "quantization_config .quant_method='gptq'"),
    ],
)
def test_config_fields_we_would_mishandle_are_refused(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        ModelConfig.from_hf_config(_hf_dict(hf_qwen3, **changes), source="x/config.json")


def test_unsupported_architecture_names_every_supported_one():
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_hf_config(_hf_dict(hf_qwen2, architectures=["PhiForCausalLM"]))
    for arch in ("LlamaForCausalLM", "GlmForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"):
        assert arch in str(err.value)


def test_quantized_checkpoint_folder_is_refused_naming_the_field(tmp_path):
    hf = hf_mistral()
    hf.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(
        config.replace('"model_type"', '"quantization_config": {"quant_method": "awq"}, "model_type"')
    )
    with pytest.raises(ConfigError, match="quantization_config"):
        load_model(tmp_path)


def test_qwen2_config_writes_back_as_qwen2():
    cfg = ported(hf_qwen2(tie=True)).cfg
    hf = cfg.to_hf_config()
    assert hf["architectures"] == ["Qwen2ForCausalLM"] and hf["model_type"] == "qwen2"
    assert ModelConfig.from_hf_config(hf, dtype="float32") == cfg.replace(head_dim=cfg.head_size)


# ---------------------------------------------------------------- --model.init: train from an HF folder
def test_train_from_hf_folder_with_lora_exports_the_same_architecture(tokenizer_dir, tmp_path, make=hf_qwen3):
    """--model.init=<HF folder of a new family>: trains (default chat format of the family, the tokenizer has
    no template), exports, and jax-to-hf gives a folder transformers loads as the same class with the
    trained model's logits."""
    original = make()
    original.resize_token_embeddings(512)  # the session tokenizer's size
    original.save_pretrained(tmp_path / "hf")
    args = [a for a in tiny_args(tokenizer_dir, tmp_path / "run") if not a.startswith("--model.")]
    args += [f"--model.init={tmp_path / 'hf'}", f"--model.tokenizer={tokenizer_dir}", "--model.dtype=float32"]
    args += ["--train.steps=2", "--lora.enabled=true", "--lora.targets=[q_proj,o_proj,up_proj]", "--data.seq_len=512"]
    cfg, _ = parse_args(args)
    result = run(cfg)
    assert np.isfinite(result.last_loss)
    assert convert(["jax-to-hf", "--ckpt", str(result.export_dir), "--out", str(tmp_path / "back")]) == 0
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert type(back) is type(original)
    model, _ = load_model(result.export_dir, dtype="float32")
    ids, mask, pos, seg = left_padded_batch(2, (0, 3))
    diff = max_diff_on_real_tokens(forward(model, ids, pos, seg), hf_logits(back, ids, mask, pos), mask)
    assert diff <= TOL
    trained = nnx.to_pure_dict(nnx.state(model, nnx.Param))["layers"]["self_attn"]["q_proj"]["kernel"]
    before = original.model.layers[0].self_attn.q_proj.weight.detach().numpy().T
    assert np.abs(np.asarray(trained[0]) - before).max() > 0  # the LoRA update was merged into the export


def test_init_folder_with_a_smaller_vocabulary_than_the_tokenizer_is_refused(tokenizer_dir, tmp_path):
    """Token ids past the embedding table would be clamped by the gather without a word."""
    hf_qwen2().save_pretrained(tmp_path / "hf")  # 128 tokens; the tokenizer has 512
    args = [a for a in tiny_args(tokenizer_dir, tmp_path / "run") if not a.startswith("--model.")]
    cfg, _ = parse_args([*args, f"--model.init={tmp_path / 'hf'}", f"--model.tokenizer={tokenizer_dir}"])
    with pytest.raises(TrainError, match="has 512 tokens but model.init=.* has vocab_size=128"):
        run(cfg)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
@pytest.mark.parametrize("family", ["qwen3", "glm4"])
def test_train_step_compiles_for_a_tpu_topology(family):
    """aot (rolellm_jax/aot.py): the LoRA train step of a new family compiles for v5p on this CPU."""
    from tests.training.test_aot import TINY as AOT_TINY

    args = ["--config", "launch/configs/rolellama-7b.yaml", *AOT_TINY, f"--model.family={family}"]
    args += ["--model.attention_bias=true"] if family == "glm4" else ["--model.head_dim=32"]
    result = compile_for_topology([*args, "--lora.enabled=true", "--lora.targets=[q_proj,v_proj]"], "v5p:2x2x1")
    assert result["fits"] and result["params"] > 0
