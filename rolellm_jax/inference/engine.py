"""Continuous batching: many requests decode together over a fixed number of KV-cache slots.

A background thread runs the loop: admit waiting requests into free slots (oldest first, 1, 4,
16, ... of them per batched prefill call, kv_slots.prefill_rows; at most ``prefill_budget`` prompt
slots per step, so decoding requests are not stalled long), then one jitted step advances every
active slot by a token (kv_slots.decode_rows), attending only over the window of the cache
that is live (``min_span`` is its smallest width). A slot is freed at EOS, a stop string,
``max_tokens``, or when its request is cancelled (its client went away); the next waiting request
takes it at the next step. If a batched prefill fails, its requests are retried one by one, so a
bad request fails alone.

Requests stream out through a sink (any callable; default a ``queue.Queue`` read by iterating the
handle): ``Piece`` events as text arrives, then one ``Finished``. Rendering is the caller's
(data/chat_format.py); sampling is inference/sampling.py, the same code as ``generate()``, and a
greedy request gets the tokens ``generate()`` gives its prompt, whatever else is decoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx

from rolellm_jax.inference import kv_slots
from rolellm_jax.inference.generate import GenerationError, SamplingConfig, decoding_layout
from rolellm_jax.inference.slot_table import SlotTable
from rolellm_jax.inference.text_stream import TextStream

logger = logging.getLogger(__name__)


class ContextTooLong(GenerationError):
    """Prompt + max_tokens exceed the engine's maximum length (the message has both numbers)."""


class EngineBusy(GenerationError):
    """Every slot is busy and the waiting queue is full: try again later."""


@dataclasses.dataclass(frozen=True)
class Request:
    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0  # transformers' (inference/sampling.py); 1 = off
    min_tokens: int = 0  # vLLM's: no EOS or stop string before this many tokens; 0 = off


@dataclasses.dataclass(frozen=True)
class Piece:
    text: str


@dataclasses.dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (EOS or a stop string), "length", "cancelled", "error"
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()  # the generated ids (EOS left out)
    error: str | None = None


Event = Piece | Finished


class Handle:
    """One submitted request: ``cancel()`` frees its slot; iterate it for events (default sink)."""

    def __init__(self, request: Request, sink: Callable[[Event], None] | None):
        self.request = request
        self._queue: queue.Queue[Event] | None = None if sink is not None else queue.Queue()
        self.sink = sink or self._queue.put
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[Event]:
        if self._queue is None:
            raise TypeError("this request streams into its own sink")
        while True:
            event = self._queue.get()
            yield event
            if isinstance(event, Finished):
                return


class Engine:
    def __init__(
        self,
        model: nnx.Module,
        tokenizer,
        *,
        eos_token_ids: Sequence[int],
        slots: int = 16,
        max_len: int = 2048,
        max_queue: int = 64,
        prefill_budget: int = 1024,
        min_span: int = 64,
        mesh: jax.sharding.Mesh | None = None,
    ):
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.eos = frozenset(eos_token_ids)
        self.is_eos = np.isin(np.arange(self.cfg.vocab_size), list(self.eos))  # for requests' min_tokens
        self.slots, self.max_len, self.max_queue = slots, max_len, max_queue
        self.prefill_budget = prefill_budget
        self.buckets = kv_slots.prompt_buckets(max_len)
        self.prefill_shapes = kv_slots.prefill_shapes(self.buckets, slots, prefill_budget)
        self.decode_widths = kv_slots.row_counts(slots)
        self.spans = kv_slots.prompt_buckets(max_len, smallest=min(min_span, max_len))
        self.mesh = mesh
        graphdef, self.state = nnx.split(decoding_layout(model))  # generate()'s layout: per-layer on a CPU
        self.model_def = kv_slots.ModelDef(graphdef)
        with self._mesh():
            cache = kv_slots.new_cache(self.model_def, self.state, slots=slots, max_len=max_len)
        self.table = SlotTable(slots, max_len, cache)
        self._waiting: deque[Handle] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ public
    def check(self, request: Request) -> None:
        """Refuse, in one line, a request the engine cannot run (before it waits for a slot)."""
        if not 0 <= request.min_tokens <= request.max_tokens:  # SamplingConfig's rule, in the request's words
            raise GenerationError(f"min_tokens={request.min_tokens}: must be in [0, max_tokens={request.max_tokens}]")
        SamplingConfig(
            max_new_tokens=request.max_tokens,
            temperature=request.temperature,
            top_k=request.top_k,
            top_p=request.top_p,
            repetition_penalty=request.repetition_penalty,
        ).check(self.cfg.vocab_size)
        if not request.prompt_ids:
            raise GenerationError("the prompt is empty: it needs at least one token")
        total = len(request.prompt_ids) + request.max_tokens
        if total > self.max_len:
            raise ContextTooLong(
                f"prompt of {len(request.prompt_ids)} tokens + max_tokens {request.max_tokens} = {total} "
                f"exceeds the maximum context length of {self.max_len} tokens"
            )

    def submit(self, request: Request, sink: Callable[[Event], None] | None = None) -> Handle:
        self.check(request)
        handle = Handle(request, sink)
        with self._wake:
            # waiting requests beyond the free slots are the queue
            if len(self._waiting) - len(self.table.free_rows()) >= self.max_queue:
                raise EngineBusy(f"all {self.slots} slots are busy and {len(self._waiting)} requests wait")
            self._waiting.append(handle)
            self._wake.notify()
        return handle

    def load(self) -> dict[str, int]:
        with self._wake:
            return {"slots": self.slots, "active": self.table.active_count(), "waiting": len(self._waiting)}

    def start(self) -> Engine:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="rolellm-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def warmup(self) -> None:
        """Compile and run once every shape the loop uses: each prefill (k requests x bucket), each
        decode step (width x attention span), the shift, on idle rows (segment 0: nothing live is
        written). Run, not only compiled: an executable's first run on a CPU costs up to a few times a
        later one (its kernels are set up then), which the first requests would otherwise pay."""
        if self._thread is not None:
            raise RuntimeError("warm up before start()")
        table, g, state = self.table, self.model_def, self.state
        with self._mesh():
            for k, width in self.prefill_shapes:
                ids = np.zeros((k, width), np.int32)
                args = table.idle_prefill_args(k, width)
                table.cache, first = kv_slots.prefill_rows(g, state, table.cache, ids, ids, *args, self.is_eos)
            for n in self.decode_widths:
                for span in self.spans:
                    args = table.idle_decode_args(n)
                    table.cache, first = kv_slots.decode_rows(g, state, table.cache, *args, self.is_eos, span=span)
            table.cache = kv_slots.shift_cache(table.cache, np.int32(0))
            jax.block_until_ready(first)

    # ------------------------------------------------------------------ the loop
    def _mesh(self):
        return jax.set_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    def _run(self) -> None:
        with self._mesh():
            while True:
                with self._wake:
                    while not self._stopping and not self._waiting and not self.table.active_count():
                        self._wake.wait()
                    if self._stopping:
                        break
                self._drop_cancelled()
                self._admit()
                if self.table.active_count():
                    self._decode()
        for row in self.table.active_rows():
            self._finish(row, "cancelled")
        with self._wake:
            while self._waiting:
                self._emit(self._waiting.popleft(), Finished("cancelled", 0, 0))

    def _admit(self) -> None:
        """Prefill waiting requests into free rows, several per call, within the step's budget."""
        budget = self.prefill_budget
        while self.table.free_rows():
            group, width = self._next_group(budget, first=budget == self.prefill_budget)
            if not group:
                return
            budget -= len(group) * width
            if len(group) == 1:
                self._prefill_alone(group[0])
                continue
            try:
                self._prefill(group, width)
            except Exception:  # one bad request must not stop the others: retry each alone
                logger.exception("prefill of %d requests failed: each is tried alone", len(group))
                for handle in group:
                    self._prefill_alone(handle)

    def _next_group(self, budget: int, first: bool) -> tuple[list[Handle], int]:
        """Waiting requests for one prefill call, oldest first: as many as free rows, a prefill shape
        (k one of kv_slots.row_counts) and the budget allow (the step's first call takes at least one)."""
        free = len(self.table.free_rows())
        group, width, cancelled = [], 0, []
        with self._wake:
            while self._waiting and len(group) < free:
                handle = self._waiting[0]
                if handle.cancelled.is_set():
                    cancelled.append(self._waiting.popleft())
                    continue
                wider = max(width, kv_slots.bucket_for(len(handle.request.prompt_ids), self.buckets))
                if (len(group) + 1) * wider > budget and not (first and not group):
                    break
                group.append(self._waiting.popleft())
                width = wider
            k = max((k for k in kv_slots.row_counts(self.slots) if k <= len(group)), default=0)
            for handle in reversed(group[k:]):  # beyond the largest row count: the next call's
                self._waiting.appendleft(handle)
            group = group[:k]
            if group:
                width = max(kv_slots.bucket_for(len(h.request.prompt_ids), self.buckets) for h in group)
        for handle in cancelled:
            self._emit(handle, Finished("cancelled", len(handle.request.prompt_ids), 0))
        return group, width

    def _prefill_alone(self, handle: Handle) -> None:
        try:
            self._prefill([handle], kv_slots.bucket_for(len(handle.request.prompt_ids), self.buckets))
        except Exception as err:
            logger.exception("prefill failed")
            error = f"{type(err).__name__}: {err}"
            self._emit(handle, Finished("error", len(handle.request.prompt_ids), 0, error=error))

    def _prefill(self, group: list[Handle], width: int) -> None:
        table = self.table
        table.cache = table.make_room(width, kv_slots.shift_cache)
        ids, mask = np.zeros((len(group), width), np.int32), np.zeros((len(group), width), np.int32)
        rows = []
        for i, handle in enumerate(group):
            req = handle.request
            rows.append(table.claim(handle, TextStream(self.tokenizer, req.stop), len(req.prompt_ids), self._seed(req)))
            ids[i, width - len(req.prompt_ids) :] = req.prompt_ids
            mask[i, width - len(req.prompt_ids) :] = 1
        try:
            table.cache, first = kv_slots.prefill_rows(
                self.model_def, self.state, table.cache, ids, mask, *table.prefill_args(rows), self.is_eos
            )
            first = np.asarray(first)
        except Exception:
            for row in rows:
                table.release(row)
            raise
        for row, token in zip(rows, first):
            self._take_safely(row, int(token))

    def _decode(self) -> None:
        table = self.table
        try:
            table.cache = table.room_to_decode(kv_slots.shift_cache)
            lo, span = table.window(self.spans)
            args = table.decode_args(self.decode_widths, lo)
            table.cache, tokens = kv_slots.decode_rows(
                self.model_def, self.state, table.cache, *args, self.is_eos, span=span
            )
            tokens = np.asarray(tokens)
        except Exception as err:  # the cache may be gone with it: fail the active requests, start afresh
            logger.exception("decode step failed")
            for row in table.active_rows():
                self._finish(row, "error", error=f"{type(err).__name__}: {err}")
            table.cache = kv_slots.new_cache(self.model_def, self.state, slots=self.slots, max_len=self.max_len)
            return
        table.advance()
        for row in table.active_rows():
            self._take_safely(row, int(tokens[row]))

    def _take_safely(self, row: int, token: int) -> None:
        """``_take``, where a failure (say, the tokenizer on this request's ids) ends this request only."""
        try:
            self._take(row, token)
        except Exception as err:
            logger.exception("request failed after a token")
            if self.table.rows[row] is not None:
                self._finish(row, "error", error=f"{type(err).__name__}: {err}")

    def _take(self, row: int, token: int) -> None:
        """A row's new token: stream its text, or end the request (EOS, stop string, max_tokens)."""
        slot = self.table.rows[row]
        if token in self.eos:
            return self._finish(row, "stop", slot.stream.flush())
        slot.generated.append(token)
        slot.last = token
        # vLLM's min_tokens holds stop strings back as well as EOS (the device side holds EOS)
        piece, stopped = slot.stream.push(token, stops=len(slot.generated) >= slot.handle.request.min_tokens)
        if stopped:
            return self._finish(row, "stop", piece)
        if len(slot.generated) >= slot.handle.request.max_tokens:
            return self._finish(row, "length", piece + slot.stream.flush(cut=True))
        if piece:
            self._emit(slot.handle, Piece(piece))

    def _finish(self, row: int, reason: str, piece: str = "", error: str | None = None) -> None:
        slot = self.table.release(row)
        if piece:
            self._emit(slot.handle, Piece(piece))
        self._emit(slot.handle, Finished(reason, slot.prompt_len, len(slot.generated), tuple(slot.generated), error))

    def _drop_cancelled(self) -> None:
        for row in self.table.active_rows():
            if self.table.rows[row].handle.cancelled.is_set():
                self._finish(row, "cancelled")

    @staticmethod
    def _emit(handle: Handle, event: Event) -> None:
        """Hand an event to its request's sink; a sink that fails (its server loop gone) cancels the
        request instead of stopping the engine."""
        try:
            handle.sink(event)
        except Exception:
            logger.exception("a request's event sink failed: the request is cancelled")
            handle.cancel()

    @staticmethod
    def _seed(req: Request) -> int:
        return secrets.randbits(31) if req.seed is None else req.seed % (1 << 31)
