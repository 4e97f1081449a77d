"""Mistral family (transformers' MistralForCausalLM), composed from layers.py.

The LLaMA layer (rotate-half rotary, GQA, no bias, separate gate_proj / up_proj) with an optional
``sliding_window``: Mistral-7B-v0.1 sets 4096, later releases null. Attention here is full causal,
which equals sliding-window attention while no query sees more than ``sliding_window`` tokens; the
model refuses longer sequences (layers.CausalLM) instead of silently attending further.
"""

from __future__ import annotations

from rolellm_jax.models.layers import CausalLM


class MistralForCausalLM(CausalLM):
    rotary_layout = "half"
    fused_gate_up = False
