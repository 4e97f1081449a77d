"""Tokenizers: load any checkpoint's with AutoTokenizer; train a tiny one for tests and demos.

The tiny tokenizer is a sentencepiece BPE model (byte fallback, so any UTF-8 text encodes
without <unk>; identity normalisation and no whitespace squeezing, so decode(encode(s)) == s),
converted to a fast tokenizer by transformers and saved with `save_pretrained` (tokenizer.json).

Trap this module avoids: in transformers 5 `LlamaTokenizer(vocab_file=...)` silently builds an
empty 3-token tokenizer; loading the folder that holds tokenizer.model with `from_pretrained`
runs the real sentencepiece conversion.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from data_gen.files import read_json_object
from rolellm_jax.errors import UserError
from rolellm_jax.parallel.storage import is_url, local_copy, storage_path

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
# What a checkpoint folder's tokenizer may consist of (copied along by export and conversion)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


GENERATION_CONFIG = "generation_config.json"  # travels with the tokenizer: its bos/eos/pad ids
# How a tokenizer was loaded, which transformers saves into tokenizer_config.json among its init
# kwargs (offline: local_files_only / is_local true) and a downstream from_pretrained then obeys;
# a token must never travel either. Dropped from every tokenizer_config.json we write.
LOADING_KEYS = ("local_files_only", "is_local", "token", "use_auth_token", "cache_dir", "_commit_hash")


class TokenizerError(UserError, ValueError):
    """A tokenizer that cannot be trained or loaded (message names the folder)."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a sentencepiece BPE tokenizer on `texts` and save it as a transformers tokenizer.

    Returns the loaded tokenizer. `out_dir` gets tokenizer.json, tokenizer_config.json and the
    sentencepiece tokenizer.model it was converted from.
    """
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_prefix=str(Path(tmp) / "tokenizer"),
                model_type="bpe",
                vocab_size=vocab_size,
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                character_coverage=1.0,
                split_digits=True,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=3,
                minloglevel=2,
            )
        except RuntimeError as err:  # sentencepiece reports e.g. a vocab too small for the bytes
            needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err))
            if needed:  # every character of the texts gets a piece: Chinese needs hundreds
                raise TokenizerError(
                    f"{out_dir}: vocab_size={vocab_size} is too small: the characters of these texts "
                    f"alone take {needed[1]} pieces"
                ) from None
            raise TokenizerError(f"{out_dir}: sentencepiece training failed: {str(err).splitlines()[-1]}") from None
        # from_pretrained on the folder holding tokenizer.model (never the vocab_file= constructor).
        # add_prefix_space=False mirrors add_dummy_prefix=False: no "▁" prepended to the first
        # word and no leading space stripped on decode (chat segments concatenate cleanly).
        tokenizer = LlamaTokenizer.from_pretrained(
            tmp, add_bos_token=False, add_eos_token=False, add_prefix_space=False, **SPECIAL_TOKENS
        )
        tokenizer.save_pretrained(out_dir)
        _drop_loading_keys(out_dir / "tokenizer_config.json", out_dir / "tokenizer_config.json")
        (out_dir / "tokenizer.model").write_bytes((Path(tmp) / "tokenizer.model").read_bytes())
    return load_tokenizer(out_dir)


def load_tokenizer(path: str | Path):
    """AutoTokenizer from a checkpoint folder (ours or Hugging Face), refusing an empty one."""
    from transformers import AutoTokenizer

    local = local_copy(path, TOKENIZER_FILES)  # a bucket URL's files fetched first
    path = path if is_url(path) else local
    if not local.is_dir():
        raise TokenizerError(f"{path}: no such folder")
    if not (local / "tokenizer.json").is_file() and not (local / "tokenizer.model").is_file():
        raise TokenizerError(f"{path}: no tokenizer.json or tokenizer.model in this folder")
    tokenizer = AutoTokenizer.from_pretrained(str(local))
    if len(tokenizer) <= len(SPECIAL_TOKENS):
        raise TokenizerError(f"{path}: tokenizer loaded with only {len(tokenizer)} tokens (empty vocabulary)")
    return tokenizer


def copy_tokenizer_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer (and generation config) files present in `src`; returns their names."""
    src, dst = storage_path(src), storage_path(dst)  # either may be a bucket URL
    if src.resolve() == dst.resolve():
        return []
    copied = []
    for name in (*TOKENIZER_FILES, GENERATION_CONFIG):
        if (src / name).is_file():
            if name == "tokenizer_config.json":
                _drop_loading_keys(src / name, dst / name)
            else:
                (src / name).copy(dst / name, overwrite=True)
            copied.append(name)
    return copied


def has_tokenizer_files(folder: str | Path) -> bool:
    """Whether a folder holds a tokenizer (its vocabulary, not only a config)."""
    folder = storage_path(folder)
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def _drop_loading_keys(src, dst) -> None:
    """Write src's tokenizer_config.json to dst without the LOADING_KEYS."""
    import json

    try:
        config = json.loads(src.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{src}:{err.lineno}: invalid JSON ({err.msg})") from None
    cleaned = {k: v for k, v in config.items() if k not in LOADING_KEYS}
    dst.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def stop_token_ids(ckpt: str | Path, tokenizer) -> tuple[int, ...]:
    """The tokenizer's EOS plus the ``eos_token_id`` of the checkpoint's generation_config.json
    (chat models often end a turn with a token of their own, e.g. <|im_end|> or <|eot_id|>)."""
    ids = [tokenizer.eos_token_id]
    path = Path(ckpt) / GENERATION_CONFIG
    if path.is_file():
        value = read_json_object(path, "a generation config object").get("eos_token_id")
        ids += value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(i for i in ids if isinstance(i, int)))
