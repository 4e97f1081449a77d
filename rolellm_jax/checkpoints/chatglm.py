"""Import ChatGLM2 / ChatGLM3 / GLM-4 checkpoints in their original remote-code naming (no remote code run).

These are the architecture of transformers' `GlmForCausalLM` under other names:

  transformer.embedding.word_embeddings            -> embed_tokens
  ...layers.N.input_layernorm / post_attention_layernorm (RMSNorm)
  ...layers.N.self_attention.query_key_value       -> q_proj, k_proj, v_proj (weight and bias);
       output rows are [H*hd | KV*hd | KV*hd], split in that order
  ...layers.N.self_attention.dense                 -> o_proj
  ...layers.N.mlp.dense_h_to_4h                    -> gate_up_proj (already [gate | up], like Glm)
  ...layers.N.mlp.dense_4h_to_h                    -> down_proj
  transformer.encoder.final_layernorm              -> norm
  transformer.output_layer                         -> lm_head

Rotary needs no permutation. ChatGLM2 builds `RotaryEmbedding(kv_channels // 2)` whose cache has
kv_channels/4 frequencies theta_j = (10000 * rope_ratio) ** (-2j / (kv_channels/2)) and rotates the
first kv_channels/2 dims of each head as interleaved pairs (x[2j], x[2j+1]) by theta_j, leaving
the rest untouched. transformers' Glm with partial_rotary_factor=0.5 computes
inv_freq_j = rope_theta ** (-2j / (head_dim/2)), repeats each frequency for the pair (2j, 2j+1)
and rotates with the interleaved rotate_half over the same first head_dim/2 dims: the same
frequencies on the same pairs with the same signs, given rope_theta = 10000 * rope_ratio.
GQA grouping also matches (ChatGLM2 expands each key group to num_heads/groups consecutive query
heads, like repeat_kv). The test suite checks all of this numerically against GlmForCausalLM.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rolellm_jax.checkpoints.safetensors_io import CheckpointError, SafetensorsFolder
from rolellm_jax.checkpoints.tensor_layout import allocate, get_leaf, param_shapes
from rolellm_jax.errors import ConfigError
from rolellm_jax.models.config import ModelConfig

CHATGLM_ARCHITECTURES = ("ChatGLMModel", "ChatGLMForConditionalGeneration")
# Options of the remote code that change the computation; the values our GLM implements.
_REQUIRED = {
    "rmsnorm": True,
    "apply_residual_connection_post_layernorm": False,
    "post_layer_norm": True,
    "add_bias_linear": False,
    "quantization_bit": 0,  # int4/int8 checkpoints store packed weights under other names
    "pre_seq_len": None,  # P-tuning v2 prefix encoder
}


def is_chatglm_config(hf: dict[str, Any]) -> bool:
    return hf.get("model_type") == "chatglm" or any(a in CHATGLM_ARCHITECTURES for a in hf.get("architectures") or [])


def chatglm_model_config(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig(family='glm') for a ChatGLM2/3 (or original-naming GLM-4) config.json."""
    for key, value in _REQUIRED.items():
        if hf.get(key, value) != value:
            raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported (only {value!r})")
    for key in ("padded_vocab_size", "hidden_size", "ffn_hidden_size", "num_layers", "num_attention_heads"):
        if key not in hf:
            raise ConfigError(f"{source}: missing key {key!r}")
    heads = hf["num_attention_heads"]
    kv_heads = hf.get("multi_query_group_num", heads) if hf.get("multi_query_attention", False) else heads
    return ModelConfig(
        family="glm",
        vocab_size=hf["padded_vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["ffn_hidden_size"],
        num_hidden_layers=hf["num_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hf.get("kv_channels") or hf["hidden_size"] // heads,
        rms_norm_eps=hf.get("layernorm_epsilon", 1e-5),
        rope_theta=10000.0 * hf.get("rope_ratio", 1),
        partial_rotary_factor=0.5,
        attention_bias=bool(hf.get("add_qkv_bias", False)),
        tie_word_embeddings=False,
        max_position_embeddings=hf.get("seq_length", 2048),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id", 2),
        pad_token_id=hf.get("pad_token_id"),
    )


def read_chatglm_params(folder: SafetensorsFolder, cfg: ModelConfig, dtype: np.dtype) -> dict:
    """Our GLM parameter tree, filled tensor by tensor from ChatGLM-named safetensors."""
    params = allocate(param_shapes(cfg), dtype)
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    q, kv = cfg.num_attention_heads * cfg.head_size, cfg.num_key_value_heads * cfg.head_size
    get_leaf(params, ("embed_tokens", "embedding"))[...] = folder.read(
        "transformer.embedding.word_embeddings.weight", (v, d)
    )
    layers = params["layers"]
    attn = layers["self_attn"]
    for i in range(cfg.num_hidden_layers):
        prefix = f"transformer.encoder.layers.{i}."
        layers["input_layernorm"]["scale"][i] = folder.read(prefix + "input_layernorm.weight", (d,))
        layers["post_attention_layernorm"]["scale"][i] = folder.read(prefix + "post_attention_layernorm.weight", (d,))
        qkv = folder.read(prefix + "self_attention.query_key_value.weight", (q + 2 * kv, d))
        for name, rows in zip(("q_proj", "k_proj", "v_proj"), np.split(qkv, [q, q + kv])):
            attn[name]["kernel"][i] = rows.T
        del qkv
        if cfg.attention_bias:
            bias = folder.read(prefix + "self_attention.query_key_value.bias", (q + 2 * kv,))
            for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(bias, [q, q + kv])):
                attn[name]["bias"][i] = part
        attn["o_proj"]["kernel"][i] = folder.read(prefix + "self_attention.dense.weight", (d, q)).T
        layers["mlp"]["gate_up_proj"]["kernel"][i] = folder.read(prefix + "mlp.dense_h_to_4h.weight", (2 * f, d)).T
        layers["mlp"]["down_proj"]["kernel"][i] = folder.read(prefix + "mlp.dense_4h_to_h.weight", (d, f)).T
    params["norm"]["scale"][...] = folder.read("transformer.encoder.final_layernorm.weight", (d,))
    params["lm_head"]["kernel"][...] = folder.read("transformer.output_layer.weight", (v, d)).T
    _refuse_unknown(folder, cfg)
    return params


def _refuse_unknown(folder: SafetensorsFolder, cfg: ModelConfig) -> None:
    known_suffixes = (
        "input_layernorm.weight", "post_attention_layernorm.weight", "self_attention.query_key_value.weight",
        "self_attention.query_key_value.bias", "self_attention.dense.weight", "mlp.dense_h_to_4h.weight",
        "mlp.dense_4h_to_h.weight",
    )  # fmt: skip
    for name in folder.names():
        if name.startswith("transformer.encoder.layers."):
            layer, _, rest = name.removeprefix("transformer.encoder.layers.").partition(".")
            if int(layer) < cfg.num_hidden_layers and rest in known_suffixes:
                if rest.endswith(".bias") and not cfg.attention_bias:
                    raise CheckpointError(f"{folder.folder}: tensor {name} present but add_qkv_bias is false")
                continue
        elif name in (
            "transformer.embedding.word_embeddings.weight",
            "transformer.encoder.final_layernorm.weight",
            "transformer.output_layer.weight",
            "transformer.rotary_pos_emb.inv_freq",  # a buffer recomputed from the config
        ):
            continue
        raise CheckpointError(f"{folder.folder}: unexpected tensor {name} for a ChatGLM checkpoint")
