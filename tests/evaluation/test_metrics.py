"""Rouge-L parity with the reference packages (rouge_score, rouge, rouge-chinese) to 1e-6."""

from __future__ import annotations

import json
import random
import sys

import pytest
from rouge import Rouge as RougePkg
from rouge_chinese import Rouge as RougeChinesePkg
from rouge_score.rouge_scorer import RougeScorer

from data_gen.rolebench import looks_chinese
from rolellm_jax.evaluation.rouge import MetricError, rouge_l, rouge_l_single

sys.setrecursionlimit(20000)  # the `rouge` package reconstructs its LCS recursively

_SCORER = RougeScorer(["rougeL"])
_ROUGE = RougePkg(metrics=["rouge-l"])
_ROUGE_ZH = RougeChinesePkg(metrics=["rouge-l"])

EN_WORDS = "the a of and I you Captain ship sea rum . , ! ? Ah well savvy it's Jack 42 don't".split()
ZH_CHARS = list("俺老孙朕的了是不在有我你他这个们中来上大为和国地到以说时要就出会可也。，！？“”、") + ["ab", "3"]


def ref_f1(pred: str, refs: list[str]) -> float:
    return _SCORER.score_multi(refs, pred)["rougeL"].fmeasure


def ref_paper_en(pred: str, ref: str) -> float:
    """`rouge` package recall on stripped text; 0 where the package refuses (empty hypothesis)."""
    try:
        return _ROUGE.get_scores(pred.strip(), ref.strip())[0]["rouge-l"]["r"]
    except ValueError:
        return 0.0


def ref_paper_zh(pred: str, ref: str, words: bool = False) -> float:
    import jieba

    def join(text: str) -> str:
        tokens = [w for w in jieba.cut(text) if w.strip()] if words else [c for c in text if not c.isspace()]
        return " ".join(tokens)

    try:
        return _ROUGE_ZH.get_scores(join(pred), join(ref))[0]["rouge-l"]["r"]
    except ValueError:
        return 0.0


def random_en(rng: random.Random) -> str:
    words = [rng.choice(EN_WORDS) for _ in range(rng.randint(0, 40))]
    text = ""
    for w in words:
        text += w + rng.choice([" ", " ", " ", "  ", "", "\n"])
    return rng.choice(["", " "]) + text


def random_zh(rng: random.Random) -> str:
    return "".join(rng.choice(ZH_CHARS + [" ", "\n"]) for _ in range(rng.randint(0, 60)))


def test_f1_matches_rouge_score_on_random_pairs() -> None:
    rng = random.Random(0)
    for _ in range(400):
        pred = random_en(rng)
        refs = [random_en(rng) for _ in range(rng.randint(1, 3))]
        assert rouge_l(pred, refs, mode="f1") == pytest.approx(ref_f1(pred, refs), abs=1e-6), (pred, refs)


def test_paper_en_matches_rouge_package_on_random_pairs() -> None:
    rng = random.Random(1)
    for _ in range(400):
        pred, ref = random_en(rng), random_en(rng)
        assert rouge_l_single(pred, ref, mode="paper") == pytest.approx(ref_paper_en(pred, ref), abs=1e-6), (pred, ref)


def test_paper_en_tie_breaking_of_the_reconstructed_lcs() -> None:
    # Both "a" and "b" are an LCS of length 1; the package's backtrack keeps "b" (the set decides recall).
    assert rouge_l_single("b a", "a b", mode="paper") == pytest.approx(ref_paper_en("b a", "a b"), abs=1e-9)
    rng = random.Random(2)
    alphabet = "a b c d".split()
    for _ in range(1500):
        x = " ".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        y = " ".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        assert rouge_l_single(x, y, mode="paper") == pytest.approx(ref_paper_en(x, y), abs=1e-9), (x, y)


def test_paper_en_multi_sentence_union_and_empty_sentence_quirk() -> None:
    pred = "I sail the sea. The sea is mine. . Rum!"
    ref = "The sea. I love rum and the sea . . mine"
    assert rouge_l_single(pred, ref) == pytest.approx(ref_paper_en(pred, ref), abs=1e-9)
    assert rouge_l_single(pred, ref) > 0


def test_paper_zh_matches_rouge_chinese_char_and_jieba() -> None:
    rng = random.Random(3)
    for _ in range(300):
        pred, ref = random_zh(rng), random_zh(rng)
        got = rouge_l_single(pred, ref, mode="paper", lang="zh")
        assert got == pytest.approx(ref_paper_zh(pred, ref), abs=1e-6), (pred, ref)
    for _ in range(60):
        pred, ref = random_zh(rng), random_zh(rng)
        got = rouge_l_single(pred, ref, mode="paper", lang="zh", zh_tokenizer="jieba")
        assert got == pytest.approx(ref_paper_zh(pred, ref, words=True), abs=1e-6), (pred, ref)


def test_f1_zh_matches_rouge_score_with_character_tokenizer() -> None:
    class CharTokenizer:
        def tokenize(self, text: str) -> list[str]:
            return [c for c in text if not c.isspace()]

    scorer = RougeScorer(["rougeL"], tokenizer=CharTokenizer())
    rng = random.Random(4)
    for _ in range(200):
        pred, refs = random_zh(rng), [random_zh(rng), random_zh(rng)]
        want = scorer.score_multi(refs, pred)["rougeL"].fmeasure
        assert rouge_l(pred, refs, mode="f1", lang="zh") == pytest.approx(want, abs=1e-6)


def test_empty_and_whitespace_score_zero_without_crashing() -> None:
    for mode in ("paper", "f1"):
        for lang in ("en", "zh"):
            assert rouge_l("", "Ahoy there.", mode=mode, lang=lang) == 0.0
            assert rouge_l("  \n ", "Ahoy there.", mode=mode, lang=lang) == 0.0
            assert rouge_l("Ahoy there.", "", mode=mode, lang=lang) == 0.0
            assert rouge_l("Ahoy", [], mode=mode, lang=lang) == 0.0
    assert rouge_l("...", "Ahoy.", mode="paper") == 0.0  # `rouge` raises here: no sentence left


def test_refs_max_and_first() -> None:
    refs = ["completely unrelated words", "Ah well, savvy?"]
    assert rouge_l("Ah well, savvy?", refs, refs="max", mode="f1") == pytest.approx(1.0)
    assert rouge_l("Ah well, savvy?", refs, refs="first", mode="f1") == 0.0


def test_bad_arguments_raise_metric_error() -> None:
    with pytest.raises(MetricError, match="mode"):
        rouge_l("a", "a", mode="bleu")  # type: ignore[arg-type]
    with pytest.raises(MetricError, match="references policy"):
        rouge_l("a", "a", refs="mean")  # type: ignore[arg-type]
    with pytest.raises(MetricError, match="Chinese tokenizer"):
        rouge_l("a", "a", lang="zh", zh_tokenizer="bpe")  # type: ignore[arg-type]


def test_looks_chinese() -> None:
    assert looks_chinese("俺老孙算起来，从2022年5月1日到2022年6月1日")
    assert not looks_chinese(" Ah, well, you see, I always have a few tricks up my sleeve.")


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_real_rolebench_rows_english(rolebench_sample) -> None:
    folder = rolebench_sample / "rolebench-eng/instruction-generalization/role_specific"
    preds = {(r["role"], r["question"]): r["generated"][0] for r in _rows(folder / "rolegpt_baseline.jsonl")}
    for row in _rows(folder / "test.jsonl")[:120]:
        pred, refs = preds[(row["role"], row["question"])], row["generated"]
        assert rouge_l(pred, refs, mode="f1") == pytest.approx(
            ref_f1(pred.strip(), [r.strip() for r in refs]), abs=1e-6
        )
        want = max(ref_paper_en(pred, r) for r in refs)
        assert rouge_l(pred, refs, mode="paper") == pytest.approx(want, abs=1e-6)


def test_real_rolebench_rows_chinese(rolebench_sample) -> None:
    folder = rolebench_sample / "rolebench-zh/role_specific"
    preds = {(r["role"], r["question"]): r["generated"][0] for r in _rows(folder / "rolegpt_baseline.jsonl")}
    for row in _rows(folder / "test.jsonl")[:120]:
        pred, refs = preds[(row["role"], row["question"])], row["generated"]
        want = max(ref_paper_zh(pred, r) for r in refs)
        assert rouge_l(pred, refs, mode="paper", lang="zh") == pytest.approx(want, abs=1e-6)
    for row in _rows(folder / "test.jsonl")[:20]:
        pred, refs = preds[(row["role"], row["question"])], row["generated"]
        want = max(ref_paper_zh(pred, r, words=True) for r in refs)
        assert rouge_l(pred, refs, mode="paper", lang="zh", zh_tokenizer="jieba") == pytest.approx(want, abs=1e-6)
