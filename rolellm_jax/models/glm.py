"""GLM family (ChatGLM2 / ChatGLM3 / GLM-4; transformers' GlmForCausalLM), composed from layers.py.

    embed_tokens -> L x [RMSNorm -> attention (interleaved partial rotary, GQA, q/k/v bias,
                                               bias-free o_proj) -> residual
                         RMSNorm -> SwiGLU (fused gate_up_proj, gate half first) -> residual]
                 -> norm -> lm_head

Rotary: only the first ``partial_rotary_factor * head_dim`` dims of each head rotate (0.5 in
ChatGLM2/3), in adjacent pairs (x[2j], x[2j+1]) -- the "interleaved" layout of
transformers' Glm apply_rotary_pos_emb; the remaining dims pass through unrotated.
q/k/v biases follow ``cfg.attention_bias`` (True for every GLM checkpoint).
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM


class GlmForCausalLM(CausalLM):
    rotary_layout = "interleaved"
    fused_gate_up = True
