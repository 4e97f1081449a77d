"""Repetition and length of generated answers, beside Rouge-L (which rewards neither brevity nor variety).

distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
Models"): distinct n-grams over all n-grams of a set of answers, corpus-level. A model that loops on
a catchphrase scores low. Tokens are those Rouge-L scores: characters for Chinese, rouge_score words
for English.
"""

from __future__ import annotations

from collections.abc import Sequence

from rolellm_jax.evaluation.rouge import chinese_tokens, rouge_score_tokens


def answer_tokens(text: str, lang: str) -> list[str]:
    return chinese_tokens(text) if lang == "zh" else rouge_score_tokens(text)


def distinct_n(answers: Sequence[str], n: int, lang: str) -> float:
    """Distinct n-grams / all n-grams over ``answers`` (0.0 when no answer has n tokens)."""
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1")
    grams = []
    for text in answers:
        tokens = answer_tokens(text, lang)
        grams += [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_chars(answers: Sequence[str]) -> float:
    """Mean length in characters, surrounding whitespace left out (0.0 for no answers)."""
    return sum(len(a.strip()) for a in answers) / len(answers) if answers else 0.0
