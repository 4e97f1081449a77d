"""Qwen3 family (transformers' Qwen3ForCausalLM), composed from layers.py.

    embed_tokens -> L x [RMSNorm -> attention (q/k projections, then RMSNorm over each head's
                         head_dim on q and k, then rotate-half rotary; GQA, no bias) -> residual
                         RMSNorm -> SwiGLU (separate gate_proj / up_proj) -> residual]
                 -> norm -> lm_head (or the tied embedding)

``head_dim`` is explicit in Qwen3 configs (128, not hidden_size / heads). The q/k norms are
``self_attn.q_norm`` / ``self_attn.k_norm`` with one [head_dim] scale each, shared by all heads.
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM


class Qwen3ForCausalLM(CausalLM):
    rotary_layout = "half"
    fused_gate_up = False
    qk_norm = True
