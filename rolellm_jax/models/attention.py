"""The attention function: the ONE place attention is computed, and the plug point of its kernels
(XLA, cuDNN, TPU splash, the blocked causal kernel of kernels/blocked_attention.py)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rolellm_jax.errors import ConfigError
from rolellm_jax.models.config import ATTENTION_IMPLS
from rolellm_jax.models.kernels import cpu_decode_kernels
from rolellm_jax.models.kernels.blocked_attention import (
    MASKED_SCORE,
    allowed_mask,
    causal_blocks_attention,
    causal_query_blocks,
    soft_capped,
)

# for_cpu_decoding's layers: cpu_decode_kernels.attention for one-token steps, "xla" for the rest
# (set on a laid-out model, not a config value: it has no backward)
CPU_DECODE = "cpu_decode"


def check_attention_impl(impl: str, dtype: Any = None) -> None:
    """Refuse, in one line, an attention kernel that cannot run here (before any weights load)."""
    if impl not in ATTENTION_IMPLS and impl != CPU_DECODE:
        raise ConfigError(f"attention_impl={impl!r}: expected one of {ATTENTION_IMPLS}")
    if impl == "cudnn" and dtype is not None and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        raise ConfigError(f"attention_impl='cudnn' needs dtype bfloat16 or float16, got dtype={dtype!r}")


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    *,
    q_offset: jax.Array | int = 0,
    impl: str = "xla",
    window: int | jax.Array | None = None,
    scale: float | None = None,
    softcap: float | None = None,
) -> jax.Array:
    """Causal, segment-masked (grouped-query) attention: the ONE place attention is computed.

    q [B, T, H, hd]; k, v [B, S, KV, hd] with H % KV == 0 (query head h reads kv head h // (H/KV),
    as transformers' repeat_kv). Query i sits at slot ``q_offset + i`` of the S key slots (0 without
    a cache). Query i may read slot s iff s <= its slot and both carry the same non-zero segment id;
    a padding query (segment 0) reads only its own slot, so no row is empty and nothing is NaN.
    A sliding ``window`` (Mistral's sliding_window) further limits query i to the ``window`` latest
    slots up to its own, as transformers' sliding-window causal mask does; rows are contiguous in
    their slots (left padding, packed examples), so slot distance is position distance. In a stack of
    layers that differ (Gemma's sliding and full layers) ``window`` is a traced int32 scalar per layer.
    ``scale`` multiplies the scores (default hd ** -0.5; Gemma's query_pre_attn_scalar ** -0.5);
    ``softcap`` (Gemma 2's attn_logit_softcapping) then maps them to softcap * tanh(scores / softcap)
    before the mask, as transformers' eager attention does ("xla" only).

    impl: "xla" (any backend, fp32 ok; a full causal sequence of 128+ tokens runs as causal query
    blocks with a flash-attention-style backward, models/kernels/blocked_attention.py), "cudnn" (GPU,
    needs bf16/fp16 compute), "splash" (the TPU Pallas kernel plugged in here, models/kernels/splash.py;
    full sequences only, so calls with a cache offset use "xla"). A new kernel plugs in the same
    way: same arguments, same [B, T, H, hd].
    """
    check_attention_impl(impl)
    if impl == CPU_DECODE:
        if cpu_decode_kernels.attention_supported(q, k, v):
            allowed = allowed_mask(q_segment_ids, kv_segment_ids, q_offset, window)
            return cpu_decode_kernels.attention(
                q, k, v, allowed, q.shape[-1] ** -0.5 if scale is None else scale, softcap
            )
        impl = "xla"
    if softcap is not None and impl != "xla":
        raise ConfigError(f"attention_impl={impl!r} does not implement attn_logit_softcapping: use 'xla'")
    t, s = q.shape[1], k.shape[1]
    full_sequence = isinstance(q_offset, int) and q_offset == 0 and t == s  # no KV cache offset
    if impl == "splash" and window is not None:
        raise ConfigError("attention_impl='splash' does not implement sliding_window: use attention_impl='xla'")
    if impl == "splash" and full_sequence:
        from rolellm_jax.models.kernels.splash import splash_attention  # Pallas import only when asked for

        if scale is not None:  # the splash wrapper applies hd ** -0.5 itself
            q = (q * (scale * q.shape[-1] ** 0.5)).astype(q.dtype)
        return splash_attention(q, k, v, q_segment_ids)
    if impl == "splash":
        impl = "xla"
    blocks = causal_query_blocks(t) if impl == "xla" and full_sequence else 1
    if blocks == 1:
        allowed = allowed_mask(q_segment_ids, kv_segment_ids, q_offset, window)
        if softcap is not None:
            return _soft_capped_attention(q, k, v, allowed, q.shape[-1] ** -0.5 if scale is None else scale, softcap)
        # The mask already holds causality; telling cuDNN too lets its kernels skip the tiles above the
        # diagonal (with a mask alone they compute all T x S logits). XLA gains nothing from it.
        causal = impl == "cudnn" and full_sequence
        return jax.nn.dot_product_attention(
            q, k, v, mask=allowed[:, None], scale=scale, is_causal=causal, implementation=impl
        )
    return causal_blocks_attention(q, k, v, q_segment_ids, kv_segment_ids, blocks, window, scale, softcap)


def _soft_capped_attention(q, k, v, allowed, scale: float, softcap: float) -> jax.Array:
    """transformers' eager attention with soft-capping (jax.nn.dot_product_attention has none):
    float32 scores, capped, masked, float32 softmax cast to the compute dtype, times v."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    grouped = q.reshape(b, t, kv, h // kv, hd)  # query head h reads kv head h // (H/KV)
    scores = jnp.einsum("btkgd,bskd->bkgts", grouped, k, preferred_element_type=jnp.float32) * scale
    scores = jnp.where(allowed[:, None, None], soft_capped(scores, softcap), MASKED_SCORE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h, hd).astype(q.dtype)
