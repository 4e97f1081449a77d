"""Host-side bookkeeping of the engine's KV-cache rows: which request holds which row, where its
live slots start, the shared write index, and the arrays each jitted call takes.

Invariant (see kv_slots.py): an active row's tokens sit in cache slots ``[start, index)``; a
shift moves ``start`` and ``index`` together, so ``0 <= start`` and ``index <= max_len`` always.
All scalars go to the device as fixed-width numpy types, so no call ever sees a new type (which
would compile again).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rolellm_jax.inference.sampling import RowSampling


@dataclasses.dataclass
class Slot:
    handle: Any  # engine.Handle
    stream: Any  # text_stream.TextStream
    prompt_len: int
    segment: int
    start: int
    seed: int
    generated: list[int] = dataclasses.field(default_factory=list)
    last: int = 0


class SlotTable:
    def __init__(self, slots: int, max_len: int, cache):
        self.rows: list[Slot | None] = [None] * slots
        self.max_len = max_len
        self.index = 0
        self.cache = cache
        self._next_segment = 1

    def free_rows(self) -> list[int]:
        return [r for r, slot in enumerate(self.rows) if slot is None]

    def active_rows(self) -> list[int]:
        return [r for r, slot in enumerate(self.rows) if slot is not None]

    def active_count(self) -> int:
        return sum(slot is not None for slot in self.rows)

    def _shift(self, cache, shift: int, shift_fn):
        for r in self.active_rows():
            self.rows[r].start -= shift
        self.index -= shift
        return shift_fn(cache, np.int32(shift))

    def make_room(self, width: int, shift_fn):
        """Before a prefill of ``width`` slots written right below the index: ``index >= width``."""
        if not self.active_count():
            self.index = width  # nothing live: no data to move
        elif self.index < width:
            return self._shift(self.cache, self.index - width, shift_fn)  # right: live rows keep their slots
        return self.cache

    def room_to_decode(self, shift_fn):
        """Before a decode step writes slot ``index``: move every row left by the oldest live start."""
        if self.index < self.max_len:
            return self.cache
        shift = min(self.rows[r].start for r in self.active_rows())
        if shift <= 0:  # cannot happen when every request has prompt + max_tokens <= max_len
            raise RuntimeError(f"KV cache full: a row holds all {self.max_len} slots")
        return self._shift(self.cache, shift, shift_fn)

    def claim(self, handle, stream, prompt_len: int, seed: int) -> int:
        """A free row for a new request, its prompt to be written right below the index."""
        row = self.free_rows()[0]
        segment = self._next_segment
        self._next_segment = self._next_segment % (2**31 - 2) + 1  # never 0 (0 = empty / padding)
        self.rows[row] = Slot(handle, stream, prompt_len, segment, self.index - prompt_len, seed)
        return row

    def prefill_args(self, rows: list[int]) -> tuple:
        """The per-request arguments of one prefill call of the claimed ``rows``."""
        slots = [self.rows[r] for r in rows]
        return (
            np.asarray(rows, np.int32),
            np.asarray([slot.segment for slot in slots], np.int32),
            np.int32(self.index),
            row_sampling(len(rows), dict(enumerate(slots))),
        )

    def release(self, row: int) -> Slot:
        slot, self.rows[row] = self.rows[row], None
        return slot

    def advance(self) -> None:
        self.index += 1

    def window(self, spans: tuple[int, ...]) -> tuple[int, int]:
        """``(lo, span)`` of the next decode step: the narrowest of ``spans`` (ascending, the last one
        ``max_len``) whose window ``[lo, lo + span)`` holds every live row's ``[start, index]``."""
        need = self.index + 1 - min(self.rows[r].start for r in self.active_rows())
        span = next(s for s in spans if s >= need)
        return min(max(self.index + 1 - span, 0), self.max_len - span), span

    def decode_args(self, widths: tuple[int, ...], lo: int) -> tuple:
        """Arguments of a decode step over the fewest leading rows (a width of ``widths``) that hold
        every active row, reading the window from ``lo``."""
        active = {r: self.rows[r] for r in self.active_rows()}
        n = next(w for w in widths if w > max(active, default=0))
        last, positions, segments, steps = (np.zeros(n, np.int32) for _ in range(4))
        for r, slot in active.items():
            last[r], steps[r] = slot.last, len(slot.generated)
            positions[r] = slot.prompt_len + len(slot.generated) - 1
            segments[r] = slot.segment
        return np.int32(self.index), np.int32(lo), last, positions, segments, steps, row_sampling(n, active)

    def idle_prefill_args(self, k: int, width: int) -> tuple:
        """Arguments of a prefill of k requests that writes nothing live (segment 0): for compiling ahead."""
        return np.arange(k, dtype=np.int32), np.zeros(k, np.int32), np.int32(width), row_sampling(k, {})

    def idle_decode_args(self, n: int) -> tuple:
        """Arguments of a decode step of n idle rows at slot 0: for compiling ahead."""
        zeros = np.zeros(n, np.int32)
        return np.int32(0), np.int32(0), zeros, zeros, zeros, zeros, row_sampling(n, {})


def row_sampling(n: int, slots: dict[int, Slot]) -> RowSampling:
    """The settings of ``n`` rows: each ``slots[i]``'s request's at row i, idle rows greedy with nothing on."""
    rows = RowSampling(
        seeds=np.zeros(n, np.uint32),
        temperature=np.zeros(n, np.float32),
        top_k=np.zeros(n, np.int32),
        top_p=np.ones(n, np.float32),
        penalty=np.ones(n, np.float32),
        min_tokens=np.zeros(n, np.int32),
    )
    for i, slot in slots.items():
        req = slot.handle.request
        rows.seeds[i], rows.temperature[i], rows.top_k[i] = slot.seed, req.temperature, req.top_k
        rows.top_p[i], rows.penalty[i], rows.min_tokens[i] = req.top_p, req.repetition_penalty, req.min_tokens
    return rows
