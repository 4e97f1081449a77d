"""Streamed text pieces add up to the tokenizer's own decoding; stop strings cut it."""

from __future__ import annotations

from rolellm_jax.inference.text_stream import TextStream
from tests.helpers.serving_fixtures import tiny_serving_model

TEXT = "Captain Vale says: Hold the wind! 剑在人在。 Leaves 🌿 remember, rain is wet."


def streamed(tokenizer, ids, stop=(), cut=False) -> tuple[list[str], bool]:
    stream, pieces = TextStream(tokenizer, stop), []
    for token in ids:
        piece, stopped = stream.push(token)
        pieces.append(piece)
        if stopped:
            return pieces, True
    return pieces + [stream.flush(cut=cut)], False


def test_pieces_add_up_to_the_decoding() -> None:
    _, tokenizer = tiny_serving_model()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert any(t.startswith("<0x") for t in tokenizer.convert_ids_to_tokens(ids))  # byte fallback in play
    pieces, stopped = streamed(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) and not stopped
    assert "\ufffd" not in "".join(pieces) and sum(bool(p) for p in pieces) > 5


def test_a_character_cut_by_the_end_is_dropped_not_sent_as_a_replacement() -> None:
    """max_tokens can end a request between the byte tokens of one character (the leaf emoji)."""
    _, tokenizer = tiny_serving_model()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    first_byte = next(i for i, t in enumerate(tokens) if t == "<0xF0>")  # 🌿 is 4 bytes: F0 9F 8C BF
    pieces, _ = streamed(tokenizer, ids[: first_byte + 2], cut=True)
    assert "".join(pieces) == tokenizer.decode(ids[:first_byte], skip_special_tokens=True)
    assert "\ufffd" not in "".join(pieces)
    # ended by EOS instead, the model's own incomplete bytes go out as they decode
    pieces, _ = streamed(tokenizer, ids[: first_byte + 2])
    assert "".join(pieces) == tokenizer.decode(ids[: first_byte + 2], skip_special_tokens=True)


def test_stop_string_is_cut_and_never_sent_in_part() -> None:
    _, tokenizer = tiny_serving_model()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    pieces, stopped = streamed(tokenizer, ids, stop=("nonexistent", "the wind"))
    assert stopped and "".join(pieces) == "Captain Vale says: Hold "
    # a stop string's start that turns out not to be one is sent after all
    pieces, stopped = streamed(tokenizer, ids, stop=("Hold the rocks",))
    assert not stopped and "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)


def test_stop_strings_wait_while_stops_are_off() -> None:
    _, tokenizer = tiny_serving_model()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    stream, pieces = TextStream(tokenizer, ("Vale",)), []
    for i, token in enumerate(ids):
        piece, stopped = stream.push(token, stops=i >= len(ids) // 2)  # off for the first half (past "Vale")
        pieces.append(piece)
        assert not stopped
    assert "".join(pieces) + stream.flush() == tokenizer.decode(ids, skip_special_tokens=True)
