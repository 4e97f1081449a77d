"""Token sampling from logits: greedy, temperature, top-k and top-p (nucleus), after an optional
repetition penalty, minimum length and n-gram ban. The one implementation, used by batched
``generate()`` (one setting for the batch) and by the serving engine (a setting per row, rows of
different requests side by side).

Settings are traced: scalars or one value per row [B], so changing them never recompiles; the
n-gram size alone is static (it shapes the comparison), and only ``generate()`` offers it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def _per_row(value, batch: int) -> jax.Array:
    """A scalar or [B] setting as a [B, 1] column, broadcast against [B, V] logits."""
    return jnp.broadcast_to(jnp.asarray(value), (batch,))[:, None]


def seen_tokens(ids: jax.Array, mask: jax.Array, vocab: int) -> jax.Array:
    """[B, V] bool: which ids a row's prompt holds (ids / mask [B, T]; padding, mask 0, is not seen)."""
    rows = jnp.broadcast_to(jnp.arange(ids.shape[0])[:, None], ids.shape)
    return jnp.zeros((ids.shape[0], vocab), bool).at[rows, ids].max(mask.astype(bool))


def mark_seen(seen: jax.Array, tokens: jax.Array) -> jax.Array:
    """``seen`` [B, V] with each row's new token [B] added."""
    return seen.at[jnp.arange(seen.shape[0]), tokens].set(True)


def penalize_repeats(logits: jax.Array, seen: jax.Array, penalty) -> jax.Array:
    """transformers' ``repetition_penalty`` (CTRL, Keskar et al. 2019): the logit of every token a
    row has seen (prompt and generated) divided by ``penalty`` where positive, multiplied where
    negative. ``penalty`` is a scalar or one per row [B]; 1 is off (the logits come back unchanged)."""
    penalty = _per_row(penalty, logits.shape[0])
    penalized = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalized, logits)


def hold_eos(logits: jax.Array, is_eos: jax.Array, steps, min_new_tokens) -> jax.Array:
    """transformers' ``min_new_tokens``: the EOS ids' logits (``is_eos`` [V] bool) at -inf in the rows
    that have fewer than ``min_new_tokens`` new tokens. ``steps`` (new tokens so far) and
    ``min_new_tokens`` are scalars or one per row [B]; 0 is off."""
    batch = logits.shape[0]
    holding = _per_row(steps, batch) < _per_row(min_new_tokens, batch)
    return jnp.where(is_eos[None, :] & holding, -jnp.inf, logits)


def ban_repeated_ngrams(logits: jax.Array, history: jax.Array, length, n: int) -> jax.Array:
    """transformers' ``no_repeat_ngram_size``: -inf on every token that would complete an n-gram the
    row already holds (n == 1: every token it holds). ``history`` [B, H]: the row's prompt and new
    tokens so far, padding as -1 (never part of an n-gram: a padded row gets what transformers
    gives its prompt alone); ``length``: how many leading slots are filled, the same for every row
    (prompts are left-padded). ``n`` is static; 0, or more than H, bans nothing."""
    batch, width = history.shape
    if n == 0 or n > width:
        return logits
    starts = jnp.arange(width - n + 1)
    # an n-gram at j: its first n-1 tokens equal the row's last n-1, and its last token is filled
    match = jnp.broadcast_to((starts + n <= length)[None, :], (batch, starts.size))
    if n > 1:  # (while length < n - 1 no start passes the test above: the clamped slice is not read)
        prefix = jax.lax.dynamic_slice_in_dim(history, length - (n - 1), n - 1, axis=1)
        match &= prefix[:, :1] >= 0  # left padding: a prefix that begins real is real throughout
        for k in range(n - 1):
            match &= history[:, k : k + starts.size] == prefix[:, k : k + 1]
    following = history[:, n - 1 :]  # the token that completes each n-gram
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], following.shape)
    banned = jnp.zeros(logits.shape, bool).at[rows, jnp.maximum(following, 0)].max(match & (following >= 0))
    return jnp.where(banned, -jnp.inf, logits)


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """float32 logits [B, V] divided by the temperature, -inf outside the top-k / top-p tokens.

    top_k == 0 and top_p == 1 are off; temperature must be > 0 here (0 = greedy is the caller's).
    """
    batch, vocab = logits.shape
    logits = logits / _per_row(temperature, batch)
    top_k, top_p = jnp.asarray(top_k), jnp.asarray(top_p)
    # no row filters (transformers adds no top-k / top-p warper then): skip the sort over the vocabulary,
    # which costs more than a decode step's matmuls on a CPU
    filtering = jnp.any(top_k > 0) | jnp.any(top_p < 1)
    return jax.lax.cond(filtering, _top_k_top_p, lambda lg, *_: lg, logits, top_k, top_p)


def _top_k_top_p(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    batch, vocab = logits.shape
    sorted_desc = -jnp.sort(-logits, axis=-1)
    # top-k (0 = off): keep logits >= the k-th largest (ties kept, as transformers does)
    top_k = _per_row(top_k, batch)
    k = jnp.where(top_k > 0, top_k, vocab)
    sorted_desc = jnp.where(jnp.arange(vocab) < k, sorted_desc, -jnp.inf)
    # nucleus: keep the smallest set of top tokens whose probability reaches top_p (at least one)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where((mass_before < _per_row(top_p, batch)) & (sorted_desc > -jnp.inf), sorted_desc, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sample_tokens(logits: jax.Array, key: jax.Array, temperature, top_k, top_p, *, greedy: bool) -> jax.Array:
    """One token per row from float32 logits [B, V].

    ``key``: one PRNG key for the whole batch, or one key per row [B, 2] (a row's draw then does not
    depend on the other rows). ``greedy`` (static) takes the argmax and ignores the settings.
    """
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits, temperature, top_k, top_p)
    if key.ndim == 2:
        return jax.vmap(lambda k, row: jax.random.categorical(k, row))(key, logits).astype(jnp.int32)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def sample_rows(logits: jax.Array, keys: jax.Array, temperature, top_k, top_p, seen=None, penalty=1.0) -> jax.Array:
    """Per-row settings in one batch: rows with temperature 0 are greedy, the others sampled with
    their own key (keys [B, 2]). A batch of greedy rows only skips the sort (a runtime branch).
    ``seen`` [B, V] and ``penalty`` (scalar or [B]): the repetition penalty, applied first."""
    if seen is not None:
        logits = penalize_repeats(logits, seen, penalty)
    temperature = jnp.broadcast_to(jnp.asarray(temperature, jnp.float32), logits.shape[:1])
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def mixed(_):
        hot = jnp.where(temperature > 0, temperature, 1.0)
        sampled = sample_tokens(logits, keys, hot, top_k, top_p, greedy=False)
        return jnp.where(temperature > 0, sampled, greedy)

    return jax.lax.cond(jnp.any(temperature > 0), mixed, lambda _: greedy, None)


def row_keys(seeds: jax.Array, steps: jax.Array) -> jax.Array:
    """Key of row r at its step s: ``fold_in(PRNGKey(seed_r), s_r)``: a request's draws depend only
    on its own seed and how many tokens it has generated, never on its neighbours in the batch."""
    return jax.vmap(lambda seed, step: jax.random.fold_in(jax.random.PRNGKey(seed), step))(seeds, steps)


class RowSampling(NamedTuple):
    """The serving engine's sampling settings, one value per row [B] (a pytree: one jit argument).
    An idle row is greedy with nothing on (``SlotTable`` fills it so)."""

    seeds: jax.Array  # uint32
    temperature: jax.Array  # float32; 0 is greedy
    top_k: jax.Array  # int32; 0 is off
    top_p: jax.Array  # float32; 1 is off
    penalty: jax.Array  # float32 repetition penalty; 1 is off
    min_tokens: jax.Array  # int32; EOS held back until a row has this many new tokens


def next_row_tokens(logits: jax.Array, rows: RowSampling, steps, seen, is_eos) -> jax.Array:
    """Each row's next token [B] from its float32 logits [B, V] and settings, at its step ``steps``
    [B] (new tokens so far): EOS held (``is_eos`` [V]) until ``min_tokens``, then sample_rows."""
    logits = hold_eos(logits, is_eos, steps, rows.min_tokens)
    keys = row_keys(rows.seeds, steps)
    return sample_rows(logits, keys, rows.temperature, rows.top_k, rows.top_p, seen, rows.penalty)
