"""Mistral family (transformers' MistralForCausalLM), composed from layers.py.

The LLaMA layer (rotate-half rotary, GQA, no bias, separate gate_proj / up_proj) with an optional
``sliding_window``: Mistral-7B-v0.1 sets 4096 (each token reads itself and the 4095 before it, in
every layer), later releases null. The window is part of the attention mask (models/attention.py).
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM


class MistralForCausalLM(CausalLM):
    rotary_layout = "half"
    fused_gate_up = False
