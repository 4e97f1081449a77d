"""The logit rules of inference/sampling.py at their edges (their end-to-end equality with
transformers is in test_generate.py): the minimum length's boundary step, and the n-gram ban with
left padding, n == 1, and n wider than the history."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from rolellm_jax.inference.sampling import ban_repeated_ngrams, hold_eos

V = 8
EOS = jnp.asarray(np.isin(np.arange(V), [2, 5]))


def banned(history, length, n) -> list[list[int]]:
    out = ban_repeated_ngrams(jnp.zeros((len(history), V)), jnp.asarray(history, jnp.int32), length, n)
    return [np.flatnonzero(np.isinf(np.asarray(row))).tolist() for row in out]


def test_hold_eos_until_the_minimum_then_not() -> None:
    logits = jnp.zeros((3, V))
    out = np.asarray(hold_eos(logits, EOS, jnp.asarray([3, 4, 0]), jnp.asarray([4, 4, 0])))
    assert np.isinf(out[0, [2, 5]]).all() and np.isinf(out[0]).sum() == 2  # 3 tokens of 4: held
    assert not np.isinf(out[1:]).any()  # 4 of 4, and a row with no minimum: free


def test_ngram_ban_matches_by_hand() -> None:
    # row 0: 1 2 3 1 2 -> the bigram (2, 3) exists, last token 2: ban 3; trigram "1 2" -> 3 as well
    # row 1: left padding (-1) then 4 4: the bigram (4, 4) exists: ban 4; padding never matches
    history = [[1, 2, 3, 1, 2, 0, 0], [-1, -1, -1, 4, 4, 0, 0]]
    assert banned(history, 5, 2) == [[3], [4]]
    assert banned(history, 5, 3) == [[3], []]  # row 1 holds no trigram ending in (4, 4) yet
    assert banned(history, 5, 1) == [[1, 2, 3], [4]]  # n == 1: every token the row holds
    assert banned(history, 1, 3) == [[], []]  # fewer than n - 1 tokens filled: nothing
    assert banned(history, 5, 8) == [[], []]  # n wider than the history: nothing, no error
    assert banned(history, 5, 0) == [[], []]
