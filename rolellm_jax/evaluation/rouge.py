"""Rouge-L between a prediction and one or more references, bit-exact with the reference packages.

Two modes:

- ``f1``: Google's ``rouge_score`` ``RougeScorer(['rougeL'])`` F-measure without stemmer
  (lowercase, every non ``[a-z0-9]`` run becomes a space, split). For ``lang="zh"`` the same
  LCS P/R/F formula runs on Chinese tokens (rouge_score's tokenizer would drop every Chinese
  character).
- ``paper``: the convention of the RoleLLM paper's tables: Rouge-L *recall* as the PyPI ``rouge``
  package computes it for English (sentences split on ".", words split on single spaces, distinct
  words counted as sets, union of the LCS token sets of every (reference sentence, prediction
  sentence) pair) and as its Chinese fork ``rouge-chinese`` computes it (one LCS over all tokens,
  counted with repetition) on space-joined Chinese tokens.

Chinese tokens are the non-whitespace characters by default, or ``jieba`` words. Leading and
trailing whitespace is stripped (RoleBench English answers begin with a space). An empty
prediction or reference scores 0 (where the reference packages raise). Several references: the
best score (``max``, default) or the first one (``first``, as OpenCompass does).

LCS lengths come from ``rapidfuzz`` (C++). The ``rouge`` package's union needs *which* LCS its
backtrack picks (ties decide which words enter the set, and rapidfuzz's alignment breaks ties
differently), so that one case replays the package's backtrack over bit-parallel LCS rows: one
big-integer operation per row and one bit test per step, never the O(n*m) Python table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Literal

from rapidfuzz.distance import LCSseq

from rolellm_jax.errors import UserError

Mode = Literal["paper", "f1"]
RefsPolicy = Literal["max", "first"]
Lang = Literal["en", "zh"]
ZhTokenizer = Literal["char", "jieba"]

MODES: tuple[str, ...] = ("paper", "f1")
REFS_POLICIES: tuple[str, ...] = ("max", "first")
LANGS: tuple[str, ...] = ("en", "zh")
ZH_TOKENIZERS: tuple[str, ...] = ("char", "jieba")

# rouge_score.tokenize without stemmer, verbatim patterns.
_NON_ALPHANUM_RE = re.compile(r"[^a-z0-9]+")


class MetricError(UserError, ValueError):
    """A bad argument to the Rouge functions; the message is one line naming it."""


def rouge_score_tokens(text: str) -> list[str]:
    """``rouge_score.tokenize.tokenize(text, stemmer=None)``: lowercase, non-alphanumerics to spaces."""
    return _NON_ALPHANUM_RE.sub(" ", text.lower()).split()


@cache
def _jieba():
    import jieba  # imported on first use: loading its dictionary takes about a second

    jieba.setLogLevel(60)
    return jieba


def chinese_tokens(text: str, zh_tokenizer: ZhTokenizer = "char") -> list[str]:
    """Chinese tokens: non-whitespace characters, or jieba words without the whitespace ones."""
    if zh_tokenizer == "char":
        return [ch for ch in text if not ch.isspace()]
    if zh_tokenizer == "jieba":
        return [w for w in (t.strip() for t in _jieba().cut(text)) if w and not any(c.isspace() for c in w)]
    raise MetricError(f"unknown Chinese tokenizer {zh_tokenizer!r} (expected one of {ZH_TOKENIZERS})")


def _to_ids(a: Sequence[str], b: Sequence[str]) -> tuple[list[int], list[int]]:
    """Map the tokens of two sequences to shared ints (exact, no hashing collisions)."""
    vocab: dict[str, int] = {}
    return [vocab.setdefault(t, len(vocab)) for t in a], [vocab.setdefault(t, len(vocab)) for t in b]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (rapidfuzz, C++)."""
    if not a or not b:
        return 0
    ia, ib = _to_ids(a, b)
    return int(LCSseq.similarity(ia, ib))


def _fmeasure(precision: float, recall: float) -> float:
    """rouge_score.scoring.fmeasure."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _f1_from_tokens(ref: Sequence[str], pred: Sequence[str]) -> float:
    """rouge_score's _score_lcs F-measure."""
    if not ref or not pred:
        return 0.0
    lcs = lcs_length(ref, pred)
    return _fmeasure(lcs / len(pred), lcs / len(ref))


# --- the PyPI `rouge` package (English paper mode) -------------------------------------------


def _rouge_pkg_sentences(text: str) -> list[list[str]]:
    """Words per sentence exactly as ``rouge.Rouge`` splits them (keeps its "" word quirk)."""
    return [" ".join(s.split()).split(" ") for s in text.split(".") if len(s) > 0]


def _backtracked_lcs_tokens(x: Sequence[str], y: Sequence[str]) -> set[str]:
    """Token set of the LCS that ``rouge.rouge_score._recon_lcs(x, y)`` reconstructs.

    Row i of the LCS table is a bit vector over y (Hyyro 2004): bit j-1 is 0 exactly where
    L[i][j] = L[i][j-1] + 1. The walk back takes the package's branches: match when the
    tokens are equal, else step in y when that keeps the length, else step in x.
    """
    lcs = lcs_length(x, y)
    if lcs == 0:
        return set()
    if lcs == len(y):  # y is a subsequence of x: every LCS is y itself
        return set(y)
    if lcs == len(x):
        return set(x)
    match_masks: dict[str, int] = {}
    for j, token in enumerate(y):
        match_masks[token] = match_masks.get(token, 0) | (1 << j)
    full = (1 << len(y)) - 1
    row = full
    rows = [row]
    for token in x:
        matched = row & match_masks.get(token, 0)
        row = ((row + matched) | (row - matched)) & full
        rows.append(row)
    tokens: set[str] = set()
    i, j = len(x), len(y)
    while i and j:
        if x[i - 1] == y[j - 1]:
            tokens.add(x[i - 1])
            i -= 1
            j -= 1
        elif (rows[i] >> (j - 1)) & 1:
            j -= 1
        else:
            i -= 1
    return tokens


def _paper_en_scores(pred: str, ref: str) -> tuple[float, float, float]:
    """(recall, precision, f) of ``rouge.Rouge().get_scores(pred, ref)[0]['rouge-l']``; 0s where it raises."""
    hyp_sentences = _rouge_pkg_sentences(pred)
    ref_sentences = _rouge_pkg_sentences(ref)
    if not hyp_sentences or not ref_sentences:
        return 0.0, 0.0, 0.0
    ref_words = {w for s in ref_sentences for w in s}
    hyp_words = {w for s in hyp_sentences for w in s}
    reachable = ref_words & hyp_words  # the union can never hold anything else
    union: set[str] = set()
    for ref_sentence in ref_sentences:
        if len(union) == len(reachable):
            break
        ref_set = set(ref_sentence)
        for hyp_sentence in hyp_sentences:
            if ref_set.intersection(hyp_sentence) <= union:
                continue  # this pair cannot add a new word
            union |= _backtracked_lcs_tokens(ref_sentence, hyp_sentence)
    recall = len(union) / len(ref_words)
    precision = len(union) / len(hyp_words)
    return recall, precision, 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def _paper_zh_scores(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> tuple[float, float, float]:
    """(recall, precision, f) of ``rouge_chinese.Rouge`` on space-joined tokens; 0s where it raises."""
    if not pred_tokens or not ref_tokens:
        return 0.0, 0.0, 0.0
    lcs = lcs_length(ref_tokens, pred_tokens)
    recall = lcs / len(ref_tokens)
    precision = lcs / len(pred_tokens)
    return recall, precision, 2.0 * ((precision * recall) / (precision + recall + 1e-8))


# --- public API ---------------------------------------------------------------------------------


def _check(mode: str, refs: str, lang: str) -> None:
    if mode not in MODES:
        raise MetricError(f"unknown Rouge mode {mode!r} (expected one of {MODES})")
    if refs not in REFS_POLICIES:
        raise MetricError(f"unknown references policy {refs!r} (expected one of {REFS_POLICIES})")
    if lang not in LANGS:
        raise MetricError(f"unknown language {lang!r} (expected one of {LANGS})")


def rouge_l_single(
    prediction: str, reference: str, *, mode: Mode = "paper", lang: Lang = "en", zh_tokenizer: ZhTokenizer = "char"
) -> float:
    """Rouge-L of one prediction against one reference (recall in ``paper`` mode, F1 in ``f1``)."""
    _check(mode, "max", lang)
    prediction, reference = (prediction or "").strip(), (reference or "").strip()
    if not prediction or not reference:
        return 0.0
    if lang == "zh":
        pred_tokens = chinese_tokens(prediction, zh_tokenizer)
        ref_tokens = chinese_tokens(reference, zh_tokenizer)
        if mode == "paper":
            return _paper_zh_scores(pred_tokens, ref_tokens)[0]
        return _f1_from_tokens(ref_tokens, pred_tokens)
    if mode == "paper":
        return _paper_en_scores(prediction, reference)[0]
    return _f1_from_tokens(rouge_score_tokens(reference), rouge_score_tokens(prediction))


def rouge_l(
    prediction: str,
    references: str | Sequence[str],
    *,
    mode: Mode = "paper",
    refs: RefsPolicy = "max",
    lang: Lang = "en",
    zh_tokenizer: ZhTokenizer = "char",
) -> float:
    """Rouge-L of a prediction against one or several references (best one, or the first one)."""
    _check(mode, refs, lang)
    if isinstance(references, str):
        references = [references]
    if not references:
        return 0.0
    if refs == "first":
        references = references[:1]
    return max(rouge_l_single(prediction, r, mode=mode, lang=lang, zh_tokenizer=zh_tokenizer) for r in references)


def rouge_l_corpus(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    *,
    mode: Mode = "paper",
    refs: RefsPolicy = "max",
    lang: Lang = "en",
    zh_tokenizer: ZhTokenizer = "char",
) -> list[float]:
    """Per-row Rouge-L for aligned lists of predictions and references."""
    if len(predictions) != len(references):
        raise MetricError(f"{len(predictions)} predictions but {len(references)} reference rows")
    return [
        rouge_l(p, r, mode=mode, refs=refs, lang=lang, zh_tokenizer=zh_tokenizer)
        for p, r in zip(predictions, references, strict=True)
    ]
