"""GLM-4-0414 family (transformers' Glm4ForCausalLM), composed from layers.py.

GLM's layer (interleaved partial rotary, GQA, q/k/v bias, fused gate_up_proj) with two more
RMSNorms per layer on the branch outputs, before they join the residual stream:

    x = x + post_self_attn_layernorm(attn(input_layernorm(x)))
    x = x + post_mlp_layernorm(mlp(post_attention_layernorm(x)))
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM, NormNames


class Glm4ForCausalLM(CausalLM):
    rotary_layout = "interleaved"
    fused_gate_up = True
    norm_names = NormNames(post_attn="post_self_attn_layernorm", post_mlp="post_mlp_layernorm")
