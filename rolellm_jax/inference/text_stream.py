"""Token ids -> text pieces while a request decodes, with stop strings.

Decoding the newest token alone loses what depends on its neighbours (a SentencePiece word's
leading space, a character split over byte tokens), so each piece is the difference between the
decoding of a short window ending at the new token and the same window without it (the offsets
text-generation-inference uses). A piece ending in U+FFFD is an incomplete character: it waits for
the next token. Text that could be the start of a stop string is held back until it is not; at a
stop string the text is cut before it and the request ends.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far
        self.sent = 0  # how much of it was handed out
        self._prefix = 0  # window start (ids already fully decoded before it)
        self._read = 0  # ids decoded into self.text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int, *, stops: bool = True) -> tuple[str, bool]:
        """Add one generated token: ``(text to send now, stopped at a stop string)``. With ``stops``
        False no stop string counts yet (a request's ``min_tokens``) and nothing is held back for one."""
        self.ids.append(token)
        self._decode_new(final=False)
        cut = self._first_stop() if stops else None
        if cut is not None:
            piece = self.text[self.sent : cut]
            self.text, self.sent = self.text[:cut], cut
            return piece, True
        safe = len(self.text) - (self._held_back() if stops else 0)
        piece = self.text[self.sent : safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return piece, False

    def _decode_new(self, final: bool, cut: bool = False) -> None:
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            new = after[len(before) :]
            self.text += new.rstrip("\ufffd") if cut else new
            self._prefix, self._read = self._read, len(self.ids)

    def flush(self, cut: bool = False) -> str:
        """The held-back rest, once the request ends without a stop string. ``cut`` (max_tokens ended it):
        a trailing character whose bytes never all came is dropped, not sent as U+FFFD, so the answer
        is the valid text decoded so far; at EOS the model's own bytes go out as they decode."""
        if self._read < len(self.ids):
            self._decode_new(final=True, cut=cut)
        piece, self.sent = self.text[self.sent :], len(self.text)
        return piece

    def _first_stop(self) -> int | None:
        found = [
            i
            for s in self.stop
            if (i := self.text.find(s, max(0, self.sent - len(s) + 1))) != -1  # new text only
        ]
        return min(found) if found else None

    def _held_back(self) -> int:
        """Length of the longest end of the text that begins some stop string."""
        return max(
            (k for s in self.stop for k in range(min(len(s) - 1, len(self.text)), 0, -1) if self.text.endswith(s[:k])),
            default=0,
        )
