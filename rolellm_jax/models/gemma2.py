"""Gemma 2 family (transformers' Gemma2ForCausalLM), composed from layers.py.

    embed_tokens * sqrt(hidden_size) -> L x [input_layernorm -> attention -> post_attention_layernorm
        -> residual; pre_feedforward_layernorm -> GeGLU -> post_feedforward_layernorm -> residual]
    -> norm -> tied embedding (or lm_head) -> final soft-cap

Every RMSNorm scales by ``(1 + w)`` in float32 (weights start at zero). Attention: rotate-half rotary,
GQA, scale ``query_pre_attn_scalar ** -0.5``, scores soft-capped (``attn_logit_softcapping``); the
layers alternate ``sliding_attention`` (the ``sliding_window`` in the mask) and ``full_attention``
as ``layer_types`` says. Logits are soft-capped too (``final_logit_softcapping``). The MLP is GeGLU
with torch's tanh gelu (``gelu_pytorch_tanh``).
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM, NormNames

GEMMA_NORMS = NormNames(
    pre_attn="input_layernorm",
    post_attn="post_attention_layernorm",
    pre_mlp="pre_feedforward_layernorm",
    post_mlp="post_feedforward_layernorm",
)


class Gemma2ForCausalLM(CausalLM):
    rotary_layout = "half"
    norm_names = GEMMA_NORMS
    norm_plus_one = True
    mlp_activation = "gelu_pytorch_tanh"
    scale_embeddings = True
