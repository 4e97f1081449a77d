"""Rotary position embedding: one function, two layouts (LLaMA's rotate-half, GLM's interleaved),
with the inverse frequencies (and Llama-3 or linear rescaling) computed as transformers does, in float32."""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from rolellm_jax.errors import ConfigError
from rolellm_jax.models.config import ModelConfig

RotaryLayout = Literal["half", "interleaved"]


def rotary_inv_freq(cfg: ModelConfig, layer_type: str = "full_attention") -> np.ndarray:
    """Inverse frequencies of the rotated dimensions of a layer of ``layer_type``, with optional Llama-3
    or linear rescaling. Gemma 3's sliding layers (``cfg.rope_local_theta`` set) use their own base, unscaled.

    Same float32 arithmetic as transformers' compute_default_rope_parameters /
    _compute_llama3_parameters / _compute_linear_scaling_rope_parameters so the angles match to the
    last bit that matters.
    """
    dim = cfg.rotary_dim
    local = layer_type == "sliding_attention" and cfg.rope_local_theta is not None
    base = cfg.rope_local_theta if local else cfg.rope_theta
    inv_freq = 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    inv_freq = inv_freq.astype(np.float32)
    scaling = None if local else cfg.rope_scaling
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
    if kind != "llama3":
        raise ConfigError(f"rope_scaling={scaling!r}: only rope_type 'llama3' or 'linear' is supported")
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = old_len / low, old_len / high
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rotary(x: jax.Array, positions: jax.Array, inv_freq, layout: RotaryLayout) -> jax.Array:
    """Rotate the first ``2 * len(inv_freq)`` dims of each head of x [B, T, N, hd]; pass the rest.

    layout "half" (LLaMA): pair j is (x[j], x[j + r/2])  -- transformers' rotate_half.
    layout "interleaved" (GLM): pair j is (x[2j], x[2j + 1]) -- transformers' Glm apply_rotary_pos_emb.
    Pair j turns by angle positions * inv_freq[j]. Computed in float32. ``inv_freq`` is static (a tuple)
    or, for layers of different rotary bases inside a scanned stack, a traced float32 [r/2] array.
    """
    inv_freq = jnp.asarray(inv_freq, jnp.float32)
    rot = 2 * inv_freq.shape[0]
    angles = positions.astype(jnp.float32)[:, :, None, None] * inv_freq  # [B, T, 1, r/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    x_rot, x_pass = x32[..., :rot], x32[..., rot:]
    if layout == "half":
        x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    elif layout == "interleaved":
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
    else:
        raise ValueError(f"unknown rotary layout {layout!r}")
    r1, r2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    if layout == "half":
        rotated = jnp.concatenate([r1, r2], axis=-1)
    else:
        rotated = jnp.stack([r1, r2], axis=-1).reshape(x_rot.shape)
    return jnp.concatenate([rotated, x_pass], axis=-1).astype(x.dtype)
