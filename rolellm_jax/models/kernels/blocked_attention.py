"""Causal attention over whole sequences as query blocks, with a flash-attention-style backward.

The "xla" attention of a full causal sequence (no KV cache) runs here; ``models.attention.attention`` picks
it. Two ideas, both exact:

- Query blocks. Query block i can only see keys of blocks 0..i, so it attends to that prefix
  alone: at n blocks, (n-1)/2n of the score work (the masked upper triangle) is skipped. KV heads
  move in front of the sequence once (q [B, KV, T*G, hd], k/v [B, KV, S, hd]), so that every block
  is a contiguous slice whose ``size x G`` query rows form one batched GEMM per product.
- The backward of FlashAttention (Dao et al., 2022). The forward keeps each row's log-sum-exp;
  the backward recomputes the probabilities from it in one pass, ``exp(s - lse)``, and uses
  ``rowsum(dO * O)`` in place of ``rowsum(dP * P)``. Autodiff of softmax instead needs the
  normalised probabilities of every block kept, or (under remat) the whole forward run again.

The forward names its outputs and residuals ``ATTENTION_SAVED``; the dots remat policies of
``layers.REMAT_POLICIES`` keep them, so a rematerialised layer does not rerun attention before
its backward. Mask, scale and float32 softmax as ``jax.nn.dot_product_attention``; with a ``softcap``
(Gemma 2) the scaled scores become softcap * tanh(scores / softcap) before the mask, as in transformers,
and the backward multiplies by that map's derivative, 1 - tanh^2.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from rolellm_jax.models.kernels.cpu_matmul import transposed_copy

ATTENTION_SAVED = "attention_saved"
MASKED_SCORE = -0.7 * float(jnp.finfo(jnp.float32).max)  # as jax.nn.dot_product_attention


def soft_capped(scores: jax.Array, softcap: float | None) -> jax.Array:
    return scores if softcap is None else softcap * jnp.tanh(scores / softcap)


def allowed_mask(
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    q_offset: jax.Array | int,
    window: int | jax.Array | None = None,
) -> jax.Array:
    """[B, T, S] bool: query i (slot q_offset + i) may read key slot s (see models/attention.py);
    with a sliding ``window`` (a static int or a traced int32 scalar), only the ``window`` latest slots
    up to its own."""
    t, s = q_segment_ids.shape[1], kv_segment_ids.shape[1]
    q_slots = q_offset + jnp.arange(t)[:, None]
    kv_slots = jnp.arange(s)[None, :]
    same = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (kv_segment_ids[:, None, :] != 0)
    causal = (kv_slots <= q_slots) if window is None else (kv_slots <= q_slots) & (q_slots - kv_slots < window)
    return (same | (q_slots == kv_slots)[None]) & causal[None]


def causal_query_blocks(t: int, min_block: int = 64) -> int:
    """How many query blocks a full causal sequence of ``t`` tokens is cut into (1 = not cut).

    Up to 8 blocks of at least ``min_block`` tokens: more blocks skip more of the masked triangle
    but each adds a few small ops; 4 was fastest on CPU at t=256 (benchmarks/RESULTS.md).
    """
    for blocks in (8, 4, 2):
        if t % blocks == 0 and t // blocks >= min_block:
            return blocks
    return 1


def causal_blocks_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    blocks: int,
    window: int | jax.Array | None = None,
    scale: float | None = None,
    softcap: float | None = None,
) -> jax.Array:
    """q [B, T, H, hd], k/v [B, T, KV, hd] -> [B, T, H, hd]; ``blocks`` must divide T."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    g = h // kv
    qh = q.reshape(b, t, kv, g, hd).transpose(0, 2, 1, 3, 4).reshape(b, kv, t * g, hd)  # row t*G + g
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    window = None if window is None else jnp.asarray(window, jnp.int32)  # an operand: it may differ per layer
    scale = 1.0 / math.sqrt(hd) if scale is None else float(scale)
    out = _blocked(qh, kh, vh, q_segment_ids, kv_segment_ids, window, blocks, g, scale, softcap)
    return out.reshape(b, kv, t, g, hd).transpose(0, 2, 1, 3, 4).reshape(b, t, h, hd)


def _block_scores(rows, kh, q_segment_ids, kv_segment_ids, start: int, end: int, g: int, window, scale, softcap):
    """Scaled (and soft-capped), masked float32 scores [B, KV, (end-start)*G, end] of the query rows of
    one block, and tanh of the capped scores (None without a cap) for the backward."""
    scores = jnp.einsum("bkrd,bksd->bkrs", rows, kh[:, :, :end], preferred_element_type=jnp.float32)
    allowed = allowed_mask(q_segment_ids[:, start:end], kv_segment_ids[:, :end], start, window)
    allowed = jnp.repeat(allowed, g, axis=1)[:, None]  # row r is query r // G
    scores = scores * scale
    tanh = None
    if softcap is not None:
        tanh = jnp.tanh(scores / softcap)
        scores = softcap * tanh
    # min(scores, MASKED_SCORE) is MASKED_SCORE for every finite score; a plain scalar here becomes a
    # loop-invariant broadcast that XLA hoists out of the layer scan and materialises per block
    return jnp.where(allowed, scores, jnp.minimum(scores, MASKED_SCORE)), tanh


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _blocked(qh, kh, vh, q_segment_ids, kv_segment_ids, window, blocks, g, scale, softcap):
    return _blocked_fwd(qh, kh, vh, q_segment_ids, kv_segment_ids, window, blocks, g, scale, softcap)[0]


def _blocked_fwd(qh, kh, vh, q_segment_ids, kv_segment_ids, window, blocks, g, scale, softcap):
    size = qh.shape[2] // g // blocks
    outs, lses = [], []
    for i in range(blocks):
        start, end = i * size, (i + 1) * size
        rows = qh[:, :, start * g : end * g]
        scores, _ = _block_scores(rows, kh, q_segment_ids, kv_segment_ids, start, end, g, window, scale, softcap)
        row_max = jnp.max(scores, axis=-1, keepdims=True)
        unnormalised = jnp.exp(scores - row_max)
        row_sum = jnp.sum(unnormalised, axis=-1, keepdims=True)
        out = jnp.einsum(
            "bkrs,bksd->bkrd", unnormalised.astype(vh.dtype), vh[:, :, :end], preferred_element_type=jnp.float32
        )
        outs.append((out / row_sum).astype(qh.dtype))  # normalise the [rows, hd] output, not [rows, S]
        lses.append(row_max + jnp.log(row_sum))
    out, lse = jnp.concatenate(outs, axis=2), jnp.concatenate(lses, axis=2)
    qh, kh, vh, out, lse = (checkpoint_name(x, ATTENTION_SAVED) for x in (qh, kh, vh, out, lse))
    return out, (qh, kh, vh, q_segment_ids, kv_segment_ids, window, out, lse)


def _blocked_bwd(blocks, g, scale, softcap, residuals, d_out):
    qh, kh, vh, q_segment_ids, kv_segment_ids, window, out, lse = residuals
    size = qh.shape[2] // g // blocks
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)  # rowsum(dO * O)
    # dK and dV are built transposed, [B, KV, hd, S]: rows^T @ dS is a plain batched GEMM, while
    # dS^T @ rows contracts the leading dimension of both, which XLA:CPU runs on Eigen's slow
    # generic contraction (12 GFLOP/s at hd 16; the same effect as in models/kernels/cpu_matmul.py)
    transposed_shape = (*kh.shape[:2], kh.shape[3], kh.shape[2])
    dqs, dk_t, dv_t = [], jnp.zeros(transposed_shape, jnp.float32), jnp.zeros(transposed_shape, jnp.float32)
    for i in range(blocks):
        start, end = i * size, (i + 1) * size
        block_rows = slice(start * g, end * g)  # this block's query rows (G per query)
        rows, d_rows = qh[:, :, block_rows], d_out[:, :, block_rows]
        scores, tanh = _block_scores(rows, kh, q_segment_ids, kv_segment_ids, start, end, g, window, scale, softcap)
        probs = jnp.exp(scores - lse[:, :, block_rows])
        dv_t = dv_t.at[..., :end].add(
            jnp.einsum(
                "bkdr,bkrs->bkds",
                transposed_copy(d_rows),
                probs.astype(d_out.dtype),
                preferred_element_type=jnp.float32,
            )
        )
        d_probs = jnp.einsum("bkrd,bksd->bkrs", d_rows, vh[:, :, :end], preferred_element_type=jnp.float32)
        d_scores = probs * (d_probs - delta[:, :, block_rows])
        if tanh is not None:  # through softcap * tanh(s / softcap)
            d_scores = d_scores * (1.0 - tanh * tanh)
        d_scores = (d_scores * scale).astype(qh.dtype)
        dqs.append(jnp.einsum("bkrs,bksd->bkrd", d_scores, kh[:, :, :end], preferred_element_type=jnp.float32))
        dk_t = dk_t.at[..., :end].add(
            jnp.einsum("bkdr,bkrs->bkds", transposed_copy(rows), d_scores, preferred_element_type=jnp.float32)
        )
    dq, dk, dv = jnp.concatenate(dqs, axis=2), jnp.swapaxes(dk_t, 2, 3), jnp.swapaxes(dv_t, 2, 3)
    return dq.astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), None, None, None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)
