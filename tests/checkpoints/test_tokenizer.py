"""Tiny sentencepiece tokenizer: trained, saved through transformers, and identical on reload."""

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from rolellm_jax.checkpoints.tokenizer import TokenizerError, load_tokenizer, train_tokenizer

CORPUS = [
    "Hello world, this is a test of the tokenizer.",
    "Role-playing: 你好，我是孙悟空。Wukong speaks!",
    "The quick brown fox jumps over the lazy dog 1234.",
] * 40
PROBES = [
    "Hello world",
    "  two leading spaces and\ttabs\nand a newline  ",
    "孙悟空说：俺老孙来也！",
    "emoji 😀 and rare ǅ letters",
    "",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(CORPUS, vocab_size=400, out_dir=out)
    return out


def test_saved_files_and_vocab(tok_dir):
    assert (tok_dir / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    assert len(tok) == 400  # not the empty tokenizer that LlamaTokenizer(vocab_file=...) builds
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)


@pytest.mark.parametrize("text", PROBES)
def test_matches_sentencepiece_and_round_trips(tok_dir, text):
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    tok = load_tokenizer(tok_dir)
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids == sp.encode(text)
    assert tok.unk_token_id not in ids  # byte fallback covers every character
    assert tok.decode(ids) == text


def test_load_refuses_folder_without_tokenizer(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_train_reports_too_small_vocab(tmp_path):
    # sentencepiece's own words ("decrease character_coverage") name no knob of ours: say what is needed
    with pytest.raises(
        TokenizerError, match=r"vocab_size=50 is too small: the characters of these texts alone take \d+ pieces$"
    ):
        train_tokenizer(CORPUS, vocab_size=50, out_dir=tmp_path)
