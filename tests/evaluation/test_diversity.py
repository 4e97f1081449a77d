from __future__ import annotations

import pytest

from rolellm_jax.evaluation.diversity import distinct_n, mean_chars


def test_distinct_n_counts_repeated_ngrams_across_answers() -> None:
    # "a b a b" has bigrams ab, ba, ab; "a b" adds ab: 2 distinct of 4
    assert distinct_n(["a b a b", "A, b!"], 2, "en") == pytest.approx(2 / 4)
    assert distinct_n(["the cat sat"], 1, "en") == 1.0
    assert distinct_n(["one"], 2, "en") == 0.0  # no bigram at all


def test_distinct_n_on_chinese_counts_characters() -> None:
    loop = "俺老孙，俺老孙，俺老孙"
    # characters without spaces: 俺老孙，俺老孙，俺老孙 -> 10 bigrams, 4 distinct (俺老 老孙 孙， ，俺)
    assert distinct_n([loop], 2, "zh") == pytest.approx(4 / 10)
    assert distinct_n(["床前明月光"], 2, "zh") == 1.0


def test_mean_chars_ignores_surrounding_space() -> None:
    assert mean_chars([" ab ", "abcd"]) == 3.0
    assert mean_chars([]) == 0.0
