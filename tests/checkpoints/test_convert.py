"""Conversion HF <-> ours against transformers: bit-exact round trips, equal logits, clear errors.

Tiny random transformers models are saved with save_pretrained (single file and sharded),
converted with the CLI, exported back, and compared tensor by tensor (bit for bit) and by
logits. A ChatGLM2-named checkpoint is written by hand from a GlmForCausalLM's weights (fused
query_key_value, dense_h_to_4h, ...) and must give GlmForCausalLM's logits after import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GlmConfig, GlmForCausalLM, LlamaConfig, LlamaForCausalLM

from rolellm_jax import load_model
from rolellm_jax.checkpoints.model_folder import load_model_checkpoint, save_model_checkpoint
from rolellm_jax.checkpoints.safetensors_io import INDEX_FILE, SafetensorsFolder
from rolellm_jax.checkpoints.tokenizer import train_tokenizer
from rolellm_jax.convert import main
from rolellm_jax.parallel.sharding import MeshConfig, make_mesh
from tests.helpers.tiny_models import tiny_hf_config

VOCAB = 384
TOL = 1e-4


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (norm scales near 1), so no tensor can hide behind a default."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.15 * torch.randn_like(p))
    return model.eval()


def hf_llama(tie: bool = False, seed: int = 0) -> LlamaForCausalLM:
    cfg = tiny_hf_config(
        LlamaConfig,
        vocab_size=VOCAB,
        intermediate_size=48,
        tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        pad_token_id=3,
    )
    return randomised(LlamaForCausalLM(cfg), seed)


def hf_glm(seed: int = 0, rope_theta: float = 10000.0) -> GlmForCausalLM:
    cfg = tiny_hf_config(
        GlmConfig,
        vocab_size=VOCAB,
        intermediate_size=48,
        head_dim=8,
        partial_rotary_factor=0.5,
        attention_bias=True,
        rms_norm_eps=1e-5,
        pad_token_id=3,
        eos_token_id=2,
        bos_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "partial_rotary_factor": 0.5},
    )
    return randomised(GlmForCausalLM(cfg), seed)


MODELS = {"llama": hf_llama, "llama_tied": lambda: hf_llama(tie=True), "glm": hf_glm}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    prompts = Path(__file__).resolve().parents[2] / "data_gen" / "prompts"
    texts = [
        line for f in sorted(prompts.glob("role_system_*.txt")) for line in f.read_text().splitlines() if line.strip()
    ]
    texts += ["Hello, I am Sun Wukong, the Monkey King.", "你好，我是孙悟空。", "Role-play with me!"]
    train_tokenizer(texts, vocab_size=VOCAB, out_dir=out)
    return out


def save_hf(model, folder: Path, tokenizer_dir: Path, dtype=torch.float32, shard: str | None = None) -> Path:
    model.to(dtype).save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    return folder


def cli(*args) -> int:
    return main([str(a) for a in args])


def bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def token_batch(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(4, VOCAB, size=(2, 7)).astype(np.int32)


def torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.float()(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()


@nnx.jit
def our_logits(model, ids):
    return model(ids)


# ------------------------------------------------------------ HF -> ours -> HF
@pytest.mark.parametrize(
    "name,dtype,shard",
    [
        ("llama", torch.float32, None),
        ("llama", torch.bfloat16, "20KB"),
        ("llama_tied", torch.float32, "20KB"),
        ("glm", torch.float32, "20KB"),
        ("glm", torch.bfloat16, None),
    ],
)
def test_round_trip_is_bit_exact_and_loads_in_transformers(tmp_path, tokenizer_dir, name, dtype, shard):
    original = MODELS[name]()
    hf_dir = save_hf(original, tmp_path / "hf", tokenizer_dir, dtype, shard)
    assert (hf_dir / INDEX_FILE).is_file() == bool(shard)
    assert cli("hf-to-jax", "--hf", hf_dir, "--out", tmp_path / "ckpt") == 0
    params, cfg = load_model_checkpoint(tmp_path / "ckpt")
    assert cfg.param_dtype == str(dtype).removeprefix("torch.")
    assert params["layers"]["self_attn"]["q_proj"]["kernel"].shape == (2, 32, 32)  # stacked [L, in, out]
    assert cli("jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "back", "--max-shard-size", "30KB") == 0

    before, after = SafetensorsFolder(hf_dir), SafetensorsFolder(tmp_path / "back")
    assert (tmp_path / "back" / INDEX_FILE).is_file()
    umask = os.umask(0)
    os.umask(umask)
    for weights in (tmp_path / "back").glob("*.safetensors"):  # readable as the umask allows, like config.json
        assert (
            weights.stat().st_mode & 0o777
            == (tmp_path / "back" / "config.json").stat().st_mode & 0o777
            == 0o666 & ~umask
        )
    assert before.names() == after.names()
    for tensor in before.names():
        a, b = before.read(tensor), after.read(tensor)
        assert a.dtype == b.dtype and a.shape == b.shape, tensor
        np.testing.assert_array_equal(bits(a), bits(b), err_msg=tensor)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "back")  # no trust_remote_code
    assert type(reloaded) is type(original) and reloaded.dtype == dtype
    ids = token_batch()
    same_load_of_original = AutoModelForCausalLM.from_pretrained(hf_dir)  # same dtype path for rotary buffers
    np.testing.assert_array_equal(torch_logits(reloaded, ids), torch_logits(same_load_of_original, ids))
    tok = AutoTokenizer.from_pretrained(tmp_path / "back")
    assert len(tok) == VOCAB and tok.decode(tok("你好 Wukong").input_ids, skip_special_tokens=True) == "你好 Wukong"


# ------------------------------------------------------------ load_model vs transformers
@pytest.mark.parametrize("name", ["llama", "glm"])
def test_load_model_from_hf_folder_and_checkpoint_matches_transformers(tmp_path, tokenizer_dir, name):
    original = MODELS[name]()
    hf_dir = save_hf(original, tmp_path / "hf", tokenizer_dir, shard="20KB")
    assert cli("hf-to-jax", "--hf", hf_dir, "--out", tmp_path / "ckpt") == 0
    ids = token_batch()
    expected = torch_logits(original, ids)
    for source in (hf_dir, tmp_path / "ckpt"):
        model, cfg = load_model(source, dtype="float32")
        assert cfg.family == name
        diff = np.max(np.abs(np.asarray(our_logits(model, ids)) - expected))
        assert diff <= TOL, f"{source}: max |diff| {diff}"


def test_load_model_places_params_on_a_mesh(tmp_path, tokenizer_dir):
    original = hf_llama()
    hf_dir = save_hf(original, tmp_path / "hf", tokenizer_dir, dtype=torch.bfloat16)
    assert cli("hf-to-jax", "--hf", hf_dir, "--out", tmp_path / "ckpt") == 0
    mesh = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    model, cfg = load_model(tmp_path / "ckpt", mesh=mesh, param_dtype="float32", dtype="float32")
    q = nnx.state(model, nnx.Param)["layers"]["self_attn"]["q_proj"]["kernel"].get_value()
    assert q.dtype == np.float32  # cast from the stored bf16 while restoring
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert len(q.addressable_shards) == 8
    ids = token_batch()
    with jax.set_mesh(mesh):
        logits = np.asarray(our_logits(model, ids))
    # reference: the stored bf16 weights upcast exactly (rotary buffers stay fp32 in transformers)
    reference = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    diff = np.max(np.abs(logits - torch_logits(reference, ids)))
    assert diff <= TOL, diff
    # sharded jax arrays save too (as training does) and come back as the same numbers
    save_model_checkpoint(tmp_path / "resaved", nnx.to_pure_dict(nnx.state(model, nnx.Param)), cfg)
    params, _ = load_model_checkpoint(tmp_path / "resaved")
    stored, _ = load_model_checkpoint(tmp_path / "ckpt")
    np.testing.assert_array_equal(params["lm_head"]["kernel"], stored["lm_head"]["kernel"].astype(np.float32))


# ------------------------------------------------------------ ChatGLM2 naming
def write_chatglm2_checkpoint(glm: GlmForCausalLM, folder: Path, rope_ratio: float) -> None:
    """The weights of `glm` in ChatGLM2-6B's remote-code naming and fused layout (numpy only)."""
    sd = {k: v.detach().float().numpy() for k, v in glm.state_dict().items()}
    c = glm.config
    tensors = {
        "transformer.embedding.word_embeddings.weight": sd["model.embed_tokens.weight"],
        "transformer.encoder.final_layernorm.weight": sd["model.norm.weight"],
        "transformer.output_layer.weight": sd["lm_head.weight"],
        "transformer.rotary_pos_emb.inv_freq": np.zeros(c.head_dim // 4, np.float32),  # ignored buffer
    }
    for i in range(c.num_hidden_layers):
        hf, ours = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        qkv = [sd[f"{hf}self_attn.{p}_proj.weight"] for p in "qkv"]
        tensors |= {
            ours + "input_layernorm.weight": sd[hf + "input_layernorm.weight"],
            ours + "post_attention_layernorm.weight": sd[hf + "post_attention_layernorm.weight"],
            ours + "self_attention.query_key_value.weight": np.concatenate(qkv, axis=0),
            ours + "self_attention.query_key_value.bias": np.concatenate(
                [sd[f"{hf}self_attn.{p}_proj.bias"] for p in "qkv"]
            ),
            ours + "self_attention.dense.weight": sd[hf + "self_attn.o_proj.weight"],
            ours + "mlp.dense_h_to_4h.weight": sd[hf + "mlp.gate_up_proj.weight"],
            ours + "mlp.dense_4h_to_h.weight": sd[hf + "mlp.down_proj.weight"],
        }
    folder.mkdir(parents=True)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = {
        "architectures": ["ChatGLMModel"], "model_type": "chatglm",
        "auto_map": {"AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "padded_vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "ffn_hidden_size": c.intermediate_size,
        "num_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads, "kv_channels": c.head_dim,
        "multi_query_attention": True, "multi_query_group_num": c.num_key_value_heads, "add_qkv_bias": True,
        "add_bias_linear": False, "rmsnorm": True, "post_layer_norm": True, "layernorm_epsilon": c.rms_norm_eps,
        "apply_residual_connection_post_layernorm": False, "original_rope": True, "rope_ratio": rope_ratio,
        "seq_length": 256, "eos_token_id": 2, "pad_token_id": 3, "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))


def chatglm2_rope_cache(seq_len: int, kv_channels: int, rope_ratio: float) -> torch.Tensor:
    """ChatGLM2's RotaryEmbedding(kv_channels // 2).forward_impl (THUDM modeling_chatglm.py)."""
    n_elem = kv_channels // 2
    theta = 1.0 / ((10000 * rope_ratio) ** (torch.arange(0, n_elem, 2, dtype=torch.float) / n_elem))
    idx_theta = torch.outer(torch.arange(seq_len, dtype=torch.float), theta).float()
    return torch.stack([torch.cos(idx_theta), torch.sin(idx_theta)], dim=-1)


def chatglm2_apply_rotary(x: torch.Tensor, rope_cache: torch.Tensor) -> torch.Tensor:
    """ChatGLM2's apply_rotary_pos_emb, verbatim but for names (x: [sq, b, heads, hd])."""
    sq, _, heads, _ = x.shape
    rot_dim = rope_cache.shape[-2] * 2
    x, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    rope_cache = rope_cache[:sq]
    xshaped = x.reshape(sq, -1, heads, rot_dim // 2, 2)
    rope_cache = rope_cache.view(sq, -1, 1, xshaped.size(3), 2)
    x_out2 = torch.stack(
        [xshaped[..., 0] * rope_cache[..., 0] - xshaped[..., 1] * rope_cache[..., 1],
         xshaped[..., 1] * rope_cache[..., 0] + xshaped[..., 0] * rope_cache[..., 1]],
        -1,
    )  # fmt: skip
    return torch.cat((x_out2.flatten(3), x_pass), dim=-1)


def test_chatglm2_rotary_is_transformers_glm_rotary_without_permutation():
    from transformers.models.glm.modeling_glm import GlmRotaryEmbedding, apply_rotary_pos_emb

    glm = hf_glm(rope_theta=10000.0 * 3)
    seq, heads, hd = 9, glm.config.num_attention_heads, glm.config.head_dim
    q = torch.randn(1, heads, seq, hd, dtype=torch.float64).float()
    positions = torch.arange(seq)[None]
    cos, sin = GlmRotaryEmbedding(glm.config)(q, positions)
    theirs, _ = apply_rotary_pos_emb(q, q, cos, sin)  # [b, heads, seq, hd]
    ours = chatglm2_apply_rotary(q.permute(2, 0, 1, 3), chatglm2_rope_cache(seq, hd, rope_ratio=3))
    torch.testing.assert_close(ours.permute(1, 2, 0, 3), theirs, rtol=0, atol=1e-6)


def test_chatglm2_import_matches_transformers_glm(tmp_path):
    glm = hf_glm(seed=3, rope_theta=20000.0)  # rope_ratio 2: rope_theta must become 10000 * 2
    write_chatglm2_checkpoint(glm, tmp_path / "chatglm2", rope_ratio=2.0)
    assert cli("hf-to-jax", "--hf", tmp_path / "chatglm2", "--out", tmp_path / "ckpt") == 0
    model, cfg = load_model(tmp_path / "ckpt", dtype="float32")
    assert (cfg.family, cfg.rope_theta, cfg.partial_rotary_factor, cfg.num_key_value_heads) == ("glm", 20000.0, 0.5, 2)
    ids = token_batch()
    diff = np.max(np.abs(np.asarray(our_logits(model, ids)) - torch_logits(glm, ids)))
    assert diff <= TOL, diff
    # and it exports as a plain GlmForCausalLM with the very same tensors
    assert cli("jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf") == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    for key, value in glm.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value), key


# ------------------------------------------------------------ bad input
@pytest.fixture
def llama_dir(tmp_path, tokenizer_dir) -> Path:
    return save_hf(hf_llama(), tmp_path / "hf", tokenizer_dir)


def fails_with(capsys, *args) -> str:
    assert cli(*args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    return err


def test_unknown_architecture(llama_dir, tmp_path, capsys):
    config = json.loads((llama_dir / "config.json").read_text())
    config.update(architectures=["PhiForCausalLM"], model_type="phi")
    (llama_dir / "config.json").write_text(json.dumps(config))
    err = fails_with(capsys, "hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt")
    assert "config.json" in err and "PhiForCausalLM" in err and "supported: " in err and "Qwen3ForCausalLM" in err


def test_missing_tensor_is_named(llama_dir, tmp_path, capsys):
    folder = SafetensorsFolder(llama_dir)
    kept = {n: folder.read(n) for n in folder.names() if n != "model.layers.1.mlp.up_proj.weight"}
    save_file(kept, llama_dir / "model.safetensors", metadata={"format": "pt"})
    err = fails_with(capsys, "hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt")
    assert "missing tensor model.layers.1.mlp.up_proj.weight" in err


def test_shape_mismatch_names_tensor_and_both_shapes(llama_dir, tmp_path, capsys):
    folder = SafetensorsFolder(llama_dir)
    tensors = {n: folder.read(n) for n in folder.names()}
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((24, 32), np.float32)
    save_file(tensors, llama_dir / "model.safetensors", metadata={"format": "pt"})
    err = fails_with(capsys, "hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt")
    assert "model.layers.0.self_attn.k_proj.weight" in err and "[24, 32]" in err and "[16, 32]" in err


def test_pickle_only_folder_is_refused(llama_dir, tmp_path, capsys):
    (llama_dir / "model.safetensors").unlink()
    (llama_dir / "pytorch_model.bin").write_bytes(b"not unpickled")
    err = fails_with(capsys, "hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt")
    assert "pytorch_model.bin" in err and "pickle" in err


def test_existing_checkpoint_is_not_overwritten_silently(llama_dir, tmp_path, capsys):
    assert cli("hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt") == 0
    err = fails_with(capsys, "hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt")
    assert err.strip() == f"error: {tmp_path / 'ckpt'}: already holds a checkpoint; pass --overwrite to replace it"
    assert cli("hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt", "--overwrite") == 0
    # nor is a Hugging Face folder (say, the base model's own) by jax-to-hf
    before = (llama_dir / "model.safetensors").read_bytes()
    err = fails_with(capsys, "jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", llama_dir)
    assert (
        err.strip() == f"error: {llama_dir}: already holds a Hugging Face model (config.json, model.safetensors); "
        "pass --overwrite to replace it"
    )
    assert (llama_dir / "model.safetensors").read_bytes() == before
    assert cli("jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", llama_dir, "--overwrite") == 0


def test_checkpoint_not_matching_its_config(llama_dir, tmp_path, capsys):
    assert cli("hf-to-jax", "--hf", llama_dir, "--out", tmp_path / "ckpt") == 0
    config = json.loads((tmp_path / "ckpt" / "rolellm_config.json").read_text())
    (tmp_path / "ckpt" / "rolellm_config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    err = fails_with(capsys, "jax-to-hf", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "out")
    assert "layers/mlp/down_proj/kernel" in err and "[2, 48, 32]" in err and "[2, 40, 32]" in err


def test_not_a_checkpoint(tmp_path, capsys):
    err = fails_with(capsys, "jax-to-hf", "--ckpt", tmp_path, "--out", tmp_path / "out")
    assert "rolellm_config.json" in err


def test_package_never_imports_torch():
    code = (
        "import sys, rolellm_jax; assert 'jax' not in sys.modules, 'import rolellm_jax must stay cheap'; "
        "import rolellm_jax.convert, rolellm_jax.checkpoints.model_folder, rolellm_jax.checkpoints.safetensors_io, "
        "rolellm_jax.checkpoints.tokenizer; "
        "rolellm_jax.load_model; assert 'torch' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
