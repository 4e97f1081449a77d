"""The serving engine's device side: one KV cache of ``slots`` rows, each row a request, all rows
decoded together by one jitted step, within the models' cache contract (models/__init__.py).

The contract has one write index for the whole batch, so the rows share a clock: every decode step
writes all rows at slot ``index``. Requests are prefilled k at a time (``prefill_rows``: their
prompts left-padded to one power-of-two bucket P, batch k) and each one's keys / values are copied
into its own row at ``[index - P, index)``, the slots right before the shared index: from then on
it decodes in step with the others. Each request gets a segment id of its own, so a row never
attends to what an earlier request left in it, and rotary positions are passed per row, so where a
row's tokens sit in the cache does not matter.

A decode step (``decode_rows``) attends over a window of ``span`` slots (a power of two) that holds
every live row's ``[start, index]``, not over the whole cache: its cost follows the longest live
request. On the per-layer cache of a CPU-layout model (models/cpu_decoding.py) the step writes its
slot in place and each layer reads only the window (the models' cache-window contract); on a
stacked cache the window is copied out first and only the written slot goes back.

When the index reaches the end of the cache, every row is shifted left by the start of the oldest
live row (``shift_cache``); before a prefill needs ``index >= P``, rows shift right. Either way the
live part of every row is kept, so a request of ``prompt + max_tokens <= cache length`` always fits.

Compiled shapes: one prefill per (k, bucket) of ``prefill_shapes`` (k of ``row_counts``: 1, 4, 16, ...;
k * P within the engine's prefill budget), one decode step per (width, span) (widths: the leading
rows it advances, also ``row_counts``; requests take the lowest free row), one shift; nothing
depends on a request.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from rolellm_jax.inference.sampling import RowSampling, mark_seen, next_row_tokens, seen_tokens
from rolellm_jax.models.slice_update import update_slice
from rolellm_jax.parallel.sharding import constrain

CACHE_AXES = ("activation_batch", "activation_length", "activation_kv_heads", "activation_head_dim")


def _layered(fn, keys, *more):
    """``fn(array, *arrays_alike, lead)`` on a cache's ``k`` / ``v`` (and caches of the same layout):
    a stacked [L, B, S, KV, hd] array (lead 1) or a tuple of per-layer [B, S, KV, hd] arrays (lead 0,
    the CPU layout)."""
    return jax.tree.map(lambda a, *rest: fn(a, *rest, lead=a.ndim - 4), keys, *more)


def prompt_buckets(max_len: int, smallest: int = 16) -> tuple[int, ...]:
    """Prefill widths: powers of two from ``smallest``, and ``max_len`` itself as the last one."""
    buckets, width = [], smallest
    while width < max_len:
        buckets.append(width)
        width *= 2
    return (*buckets, max_len)


def bucket_for(length: int, buckets: tuple[int, ...]) -> int:
    return next(b for b in buckets if b >= length)


class ModelDef:
    """A model's nnx graphdef as the steps' static jit argument, hashed and compared by identity:
    nnx's GraphDef hashes its whole node tree on every call (~3 ms at 30 layers, a few % of a
    16-row decode step and more of a 1-row one), and the engine makes a call per token."""

    __slots__ = ("graphdef",)

    def __init__(self, graphdef):
        self.graphdef = graphdef


def new_cache(model_def: ModelDef, state, *, slots: int, max_len: int) -> dict[str, jax.Array]:
    """An empty cache, committed to its devices as a step's outputs are: a cache that turned from
    uncommitted (zeros that depend on no input) to committed after its first step would compile
    every prefill and decode shape a second time, warm-up or not."""
    cache = _empty_cache(model_def, state, slots=slots, max_len=max_len)
    return jax.tree.map(lambda a: jax.device_put(a, a.sharding), cache)


@functools.partial(jax.jit, static_argnames=("model_def", "slots", "max_len"))
def _empty_cache(model_def: ModelDef, state, *, slots: int, max_len: int) -> dict[str, jax.Array]:
    model = nnx.merge(model_def.graphdef, state)
    cache = model.init_cache(slots, max_len)
    # seen: which tokens each row's request has seen (prompt and generated), for repetition_penalty
    seen = jnp.zeros((slots, model.cfg.vocab_size), bool)
    place = lambda a, *, lead: constrain(a, (None,) * lead + CACHE_AXES)
    return dict(cache, k=_layered(place, cache["k"]), v=_layered(place, cache["v"]), seen=seen)


def row_counts(slots: int) -> tuple[int, ...]:
    """How many rows a prefill or decode call may take: powers of 4 below ``slots``, and ``slots``.
    Each count is one more compiled shape per bucket / span: powers of 4 keep them few (a prefill of
    4 prompts costs per token about what one of 16 does on a CPU, benchmarks/RESULTS.md)."""
    counts, k = [], 1
    while k < slots:
        counts.append(k)
        k *= 4
    return (*counts, slots)


def prefill_shapes(buckets: tuple[int, ...], slots: int, budget: int) -> tuple[tuple[int, int], ...]:
    """``(k, width)`` of every prefill call: k requests (a count of ``row_counts``) of one bucket,
    k * width within the budget (a single request always fits)."""
    return tuple((k, width) for width in buckets for k in row_counts(slots) if k == 1 or k * width <= budget)


@functools.partial(jax.jit, static_argnames=("model_def",), donate_argnames=("cache",))
def prefill_rows(
    model_def,
    state,
    cache,
    ids,
    mask,
    rows,
    segments,
    index,
    sampling: RowSampling,
    is_eos,
):
    """Prefill k left-padded prompts ids/mask [k, P] together and write prompt i into cache row
    ``rows[i]`` at slots ``[index - P, index)`` with segment id ``segments[i]``.

    Returns the cache and each request's first token [k] (sampled with its settings ``sampling``,
    step 0 of its seed; an EOS id, ``is_eos`` [V], only where the request's ``min_tokens`` is 0).
    """
    model = nnx.merge(model_def.graphdef, state)
    k, width = ids.shape
    positions = jnp.clip(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    fresh = model.init_cache(k, width, jax.tree.leaves(cache["k"])[0].dtype)
    logits, fresh = model(ids, positions=positions, segment_ids=mask, cache=fresh)
    start = index - width

    def write(i, cache):  # row by row, in place (the cache is donated)
        def put(full, part, *, lead):
            row = jax.lax.dynamic_slice_in_dim(part, i, 1, axis=lead)
            return update_slice(full, row, (0,) * lead + (rows[i], start, 0, 0))

        return dict(
            cache,
            k=_layered(put, cache["k"], fresh["k"]),
            v=_layered(put, cache["v"], fresh["v"]),
            segment_ids=jax.lax.dynamic_update_slice(
                cache["segment_ids"], (mask[i] * segments[i])[None], (rows[i], start)
            ),
        )

    cache = jax.lax.fori_loop(0, k, write, cache)
    seen = seen_tokens(ids, mask, cache["seen"].shape[1])
    first = next_row_tokens(logits[:, -1].astype(jnp.float32), sampling, jnp.zeros((k,), jnp.int32), seen, is_eos)
    return dict(cache, seen=cache["seen"].at[rows].set(mark_seen(seen, first))), first


@functools.partial(jax.jit, static_argnames=("model_def", "span"), donate_argnames=("cache",))
def decode_rows(
    model_def,
    state,
    cache,
    index,
    lo,
    last,
    positions,
    segments,
    steps,
    sampling: RowSampling,
    is_eos,
    *,
    span,
):
    """One token for each of the first ``n = len(last)`` rows: ``last`` [n] (the row's newest token,
    not yet in the cache) goes in at ``index`` with its position and segment id; rows with segment
    0 are idle (their output is junk). Rows from n on are left as they are: with few requests, a
    step costs a few rows, not all (n is one of ``row_counts``, so there are few shapes).

    Attention reads only the window of ``span`` slots ``[lo, lo + span)`` (static span, ``lo <=
    every live row's start``, ``index < lo + span``): a step's cost follows what is live, not the
    cache length. A per-layer cache is written in place; from a stacked one the window is copied
    out and only the slot written at ``index`` goes back. Each row's seen-token mask (ours, not the
    model's) feeds its repetition penalty; a row holds its EOS ids (``is_eos`` [V]) back until it has
    its ``sampling.min_tokens`` new tokens (``steps``)."""
    model = nnx.merge(model_def.graphdef, state)
    n = last.shape[0]
    segment_window = jax.lax.dynamic_slice(cache["segment_ids"], (0, lo), (n, span))
    step = lambda kv_cache: model(
        last[:, None], positions=positions[:, None], segment_ids=segments[:, None], cache=kv_cache
    )
    if isinstance(cache["k"], tuple):  # per-layer arrays: written in place, each layer reads the window
        window = {"k": cache["k"], "v": cache["v"], "segment_ids": segment_window, "index": index, "window_start": lo}
        logits, out = step(window)
        keys, values = out["k"], out["v"]
    else:  # stacked [L, ...]: copy the window out (the scan would rewrite the whole cache), put back one slot
        layers, _, _, heads, dim = cache["k"].shape
        copy = lambda a: jax.lax.dynamic_slice(a, (0, 0, lo, 0, 0), (layers, n, span, heads, dim))
        window = {"k": copy(cache["k"]), "v": copy(cache["v"]), "segment_ids": segment_window, "index": index - lo}
        logits, out = step(window)
        slot = lambda a: jax.lax.dynamic_slice_in_dim(a, index - lo, 1, axis=2)  # the one slot this step wrote
        put_slot = lambda full, part: update_slice(full, slot(part), (0, 0, index, 0, 0))
        keys, values = put_slot(cache["k"], out["k"]), put_slot(cache["v"], out["v"])
    seen = cache["seen"][:n]
    tokens = next_row_tokens(logits[:, 0].astype(jnp.float32), sampling, steps, seen, is_eos)
    cache = {
        "k": keys,
        "v": values,
        "segment_ids": update_slice(cache["segment_ids"], segments[:, None], (0, index)),
        "index": index + 1,
        "seen": update_slice(cache["seen"], mark_seen(seen, tokens), (0, 0)),
    }
    return cache, tokens


@functools.partial(jax.jit, donate_argnames=("cache",))
def shift_cache(cache, shift):
    """Every row moved ``shift`` slots left (right when negative). The caller keeps each row's live
    slots ``[start, index)`` inside the cache, so only dead slots wrap around (none of them carries
    the segment id of its row's request: nothing reads them)."""
    roll = lambda a, axis: jnp.roll(a, -shift, axis=axis)
    slots = lambda a, *, lead: roll(a, lead + 1)
    return dict(
        cache, k=_layered(slots, cache["k"]), v=_layered(slots, cache["v"]), segment_ids=roll(cache["segment_ids"], 1)
    )
