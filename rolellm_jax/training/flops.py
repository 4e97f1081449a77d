"""Model FLOPs per token and the accelerators' peak FLOP/s, for the MFU estimate.

FLOPs per trained token (PaLM, appendix B): 6 * N + 12 * L * H * hd * T (LoRA: 4 * N for the frozen
base plus 6 per adapter parameter), where N counts the
parameters that take part in matrix multiplies (every weight but the embedding table, whose
lookup is a gather; a tied lm_head counts once), L layers, H query heads of size hd, T the
sequence length (causal masking is not subtracted, as in PaLM and MaxText).

Peak dense bf16 FLOP/s per device, from the vendors' data sheets:

| device_kind contains | peak    | source                                  |
|----------------------|---------|-----------------------------------------|
| TPU v4               | 275e12  | Google Cloud TPU v4 docs                |
| TPU v5 lite (v5e)    | 197e12  | Google Cloud TPU v5e docs               |
| TPU v5 / v5p         | 459e12  | Google Cloud TPU v5p docs               |
| TPU v6 lite (v6e)    | 918e12  | Google Cloud TPU v6e (Trillium) docs    |
| H100 / H200 (SXM)    | 989e12  | NVIDIA H100/H200 data sheets (dense)    |
| A100                 | 312e12  | NVIDIA A100 data sheet (dense)          |

CPUs have no entry (their peak depends on the SKU and the vector units): MFU shows as n/a unless
`logging.peak_flops` gives the per-device peak.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from rolellm_jax.models.config import ModelConfig

# Order matters: the first substring that matches wins ("v5 lite" before "v5").
PEAK_BF16_FLOPS = (
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_flops_per_device(device: Any | None = None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    return next((peak for name, peak in PEAK_BF16_FLOPS if name.lower() in kind.lower()), None)


def matmul_params(params: Any) -> int:
    """Parameters that enter matrix multiplies: all but the embedding table (tree of checkpoints/tensor_layout.py)."""
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    embedding = params.get("embed_tokens", {}).get("embedding")
    if embedding is not None and "lm_head" in params:
        total -= math.prod(embedding.shape)
    return total


def flops_per_token(cfg: ModelConfig, n_matmul_params: int, seq_len: int, adapter_params: int | None = None) -> float:
    """``adapter_params`` (LoRA): the base is frozen, so its weights cost their forward and input-gradient
    GEMMs only (4 N; the step computes the adapters unmerged, training/lora.py), the adapters all three."""
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_size * seq_len
    if adapter_params is None:
        return 6 * n_matmul_params + attention
    return 4 * n_matmul_params + 6 * adapter_params + attention
