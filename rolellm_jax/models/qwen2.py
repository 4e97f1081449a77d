"""Qwen2 / Qwen2.5 family (transformers' Qwen2ForCausalLM), composed from layers.py.

    embed_tokens -> L x [RMSNorm -> attention (rotate-half rotary, GQA, q/k/v bias, bias-free o_proj)
                         -> residual, RMSNorm -> SwiGLU (separate gate_proj / up_proj) -> residual]
                 -> norm -> lm_head (or the tied embedding: the 0.5B-3B models tie)

LLaMA's layer with q/k/v biases, which Qwen2 always has (``cfg.attention_bias`` is True for this
family). Qwen2's optional sliding window (``use_sliding_window``) is refused when reading a config.
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM


class Qwen2ForCausalLM(CausalLM):
    rotary_layout = "half"
    fused_gate_up = False
