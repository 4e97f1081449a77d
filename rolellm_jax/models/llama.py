"""LLaMA family (transformers' LlamaForCausalLM), composed from layers.py.

    embed_tokens -> L x [RMSNorm -> attention (rotate-half rotary, GQA, no bias) -> residual
                         RMSNorm -> SwiGLU (separate gate_proj / up_proj) -> residual]
                 -> norm -> lm_head (or the tied embedding)

Rotary: ``rope_theta`` and optional Llama-3 ``rope_scaling`` (rotary.rotary_inv_freq); the
"half" layout pairs dimension j with j + hd/2, exactly transformers' rotate_half, so HF weights
load by transposing only (never permuting q/k rows).
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM


class LlamaForCausalLM(CausalLM):
    rotary_layout = "half"
    fused_gate_up = False
