"""The serving engine's device side: one KV cache of ``slots`` rows, each row a request, all rows
decoded together by one jitted step, within the models' cache contract (models/__init__.py).

The contract has one write index for the whole batch, so the rows share a clock: every decode step
writes all rows at slot ``index``. A request is prefilled alone (batch 1, its prompt left-padded to
a power-of-two bucket) and its keys / values are copied into its row at ``[index - P, index)``, the
slots right before the shared index: from then on it decodes in step with the others. Each request
gets a segment id of its own, so a row never attends to what an earlier request left in it, and
rotary positions are passed per row, so where a row's tokens sit in the cache does not matter.

When the index reaches the end of the cache, every row is shifted left by the start of the oldest
live row (``shift_cache``); before a prefill needs ``index >= P``, rows shift right. Either way the
live part of every row is kept, so a request of ``prompt + max_tokens <= cache length`` always fits.

Compiled shapes: one prefill per bucket, one decode step per width (the leading rows it advances:
powers of two up to ``slots``; requests take the lowest free row), one shift; nothing depends on a
request.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from rolellm_jax.inference.sampling import mark_seen, row_keys, sample_rows, seen_tokens
from rolellm_jax.parallel.sharding import constrain

CACHE_AXES = (None, "activation_batch", "activation_length", "activation_kv_heads", "activation_head_dim")


def prompt_buckets(max_len: int, smallest: int = 16) -> tuple[int, ...]:
    """Prefill widths: powers of two from ``smallest``, and ``max_len`` itself as the last one."""
    buckets, width = [], smallest
    while width < max_len:
        buckets.append(width)
        width *= 2
    return (*buckets, max_len)


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    return next(b for b in buckets if b >= length)


@functools.partial(jax.jit, static_argnames=("graphdef", "slots", "max_len"))
def new_cache(graphdef, state, *, slots: int, max_len: int) -> dict[str, jax.Array]:
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(slots, max_len)
    # seen: which tokens each row's request has seen (prompt and generated), for repetition_penalty
    seen = jnp.zeros((slots, model.cfg.vocab_size), bool)
    return dict(cache, k=constrain(cache["k"], CACHE_AXES), v=constrain(cache["v"], CACHE_AXES), seen=seen)


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def prefill_into_row(graphdef, state, cache, ids, mask, row, segment, index, seed, temperature, top_k, top_p, penalty):
    """Prefill one left-padded prompt ids/mask [1, P] and write it into ``row`` at ``[index-P, index)``.

    Returns the cache and the request's first token (sampled with its settings, step 0 of its seed).
    """
    model = nnx.merge(graphdef, state)
    width = ids.shape[1]
    positions = jnp.clip(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    alone = model.init_cache(1, width, cache["k"].dtype)
    logits, alone = model(ids, positions=positions, segment_ids=mask, cache=alone)
    start = index - width
    k = jax.lax.dynamic_update_slice(cache["k"], alone["k"], (0, row, start, 0, 0))
    v = jax.lax.dynamic_update_slice(cache["v"], alone["v"], (0, row, start, 0, 0))
    segment_ids = jax.lax.dynamic_update_slice(cache["segment_ids"], mask * segment, (row, start))
    keys = row_keys(seed[None], jnp.zeros((1,), jnp.int32))
    seen = seen_tokens(ids, mask, cache["seen"].shape[1])
    first = sample_rows(logits[:, -1], keys, temperature[None], top_k[None], top_p[None], seen, penalty[None])
    seen = jax.lax.dynamic_update_slice(cache["seen"], mark_seen(seen, first), (row, 0))
    return dict(cache, k=k, v=v, segment_ids=segment_ids, seen=seen), first[0]


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def decode_rows(
    graphdef, state, cache, index, last, positions, segments, seeds, steps, temperature, top_k, top_p, penalty
):
    """One token for each of the first ``n = len(last)`` rows: ``last`` [n] (the row's newest token,
    not yet in the cache) goes in at ``index`` with its position and segment id; rows with segment
    0 are idle (their output is junk). Rows from n on are left as they are: with few requests, a
    step costs a few rows, not all (n is a power of two, so there are few shapes). Each row's
    seen-token mask (ours, not the model's) feeds its repetition penalty."""
    model = nnx.merge(graphdef, state)
    n = last.shape[0]
    rows = {"k": cache["k"][:, :n], "v": cache["v"][:, :n], "segment_ids": cache["segment_ids"][:n], "index": index}
    logits, rows = model(last[:, None], positions=positions[:, None], segment_ids=segments[:, None], cache=rows)
    seen = cache["seen"][:n]
    tokens = sample_rows(logits[:, 0], row_keys(seeds, steps), temperature, top_k, top_p, seen, penalty)
    put = lambda full, part: jax.lax.dynamic_update_slice(full, part.astype(full.dtype), (0,) * full.ndim)
    cache = {
        "k": put(cache["k"], rows["k"]) if n < cache["k"].shape[1] else rows["k"],
        "v": put(cache["v"], rows["v"]) if n < cache["v"].shape[1] else rows["v"],
        "segment_ids": put(cache["segment_ids"], rows["segment_ids"]),
        "index": rows["index"],
        "seen": put(cache["seen"], mark_seen(seen, tokens)),
    }
    return cache, tokens


def decode_widths(slots: int) -> tuple[int, ...]:
    """How many leading rows a decode step may advance: powers of two, and ``slots``."""
    return prompt_buckets(slots, smallest=1)


@functools.partial(jax.jit, donate_argnames=("cache",))
def shift_cache(cache, shift):
    """Every row moved ``shift`` slots left (right when negative). The caller keeps each row's live
    slots ``[start, index)`` inside the cache, so only dead slots wrap around (none of them carries
    the segment id of its row's request: nothing reads them)."""
    roll = lambda a, axis: jnp.roll(a, -shift, axis=axis)
    return dict(cache, k=roll(cache["k"], 2), v=roll(cache["v"], 2), segment_ids=roll(cache["segment_ids"], 1))
