"""Gemma 3 text family (transformers' Gemma3ForCausalLM, model_type gemma3_text), composed from layers.py.

Gemma 2's layer (gemma2.py: scaled embeddings, (1 + w) sandwich norms, GeGLU, query_pre_attn_scalar)
with a per-head ``(1 + w)`` RMSNorm on q and k before rotary (``self_attn.q_norm`` / ``k_norm``), no
soft-capping by default, and two rotary bases: the ``sliding_attention`` layers (five of every six in
the released models) use ``rope_local_theta`` (transformers' rope_parameters["sliding_attention"]),
the ``full_attention`` ones ``rope_theta`` with its optional linear ``rope_scaling``. Only the text
model: Gemma3ForConditionalGeneration (vision) is refused when a config is read.
"""

from __future__ import annotations

from rolellm_jax.models.gemma2 import GEMMA_NORMS
from rolellm_jax.models.layers import CausalLM


class Gemma3ForCausalLM(CausalLM):
    rotary_layout = "half"
    qk_norm = True
    norm_names = GEMMA_NORMS
    norm_plus_one = True
    mlp_activation = "gelu_pytorch_tanh"
    scale_embeddings = True
