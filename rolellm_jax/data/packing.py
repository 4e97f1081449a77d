"""RoleBench rows -> chat-rendered, loss-masked, packed, deterministic training batches.

Pipeline: read rows (rolebench_source.py) -> one example per reference answer
(``references_per_row``) with the role's system instruction -> render and tokenise
(chat_format.py, batched) -> truncate to ``seq_len`` -> pack into fixed rows
(best-fit decreasing; an example is never split across rows) -> epoch-wise seeded shuffle.

Examples are dealt round-robin into ``data.shards`` shards (default: one per process); each
shard is packed on its own and is an endless stream in which epoch ``e`` is its packed rows in
the order of a permutation seeded by ``(seed, shard, e)``. Global batch ``k`` is ``B / shards``
rows of every shard, shard after shard: a pure function of ``(seed, k, shards)``, so resuming at
step k needs no replay and the same shards give the same batches on any number of processes.
A process tokenises, packs and holds only its own shards, which are exactly its contiguous block
of the global batch; :func:`to_global_arrays` assembles the global ``jax.Array`` with
``jax.make_array_from_process_local_data``.

Inside a packed row, ``segment_ids`` number the examples 1..n (0 = padding) and ``positions``
restart at 0 for each; ``targets[t]`` is the next token of the same segment and ``loss_mask[t]``
is 1 only when that target is an answer token (EOS included).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from rolellm_jax.data.examples import DataConfig, DataError, DataStats, Example, load_examples, tokenize_examples

logger = logging.getLogger(__name__)

BATCH_KEYS = ("input_ids", "targets", "loss_mask", "segment_ids", "positions")


def pack(lengths: Sequence[int], seq_len: int, seed: int) -> list[list[int]]:
    """Group example indices into rows of total length <= seq_len (best-fit decreasing).

    Ties in length are broken by a seeded permutation, so the result is deterministic.
    """
    order = np.random.default_rng([seed, 0xC0FFEE]).permutation(len(lengths))
    order = sorted(order.tolist(), key=lambda i: -lengths[i])  # stable: seeded order within a length
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free space, row index) of open rows
    for i in order:
        n = lengths[i]
        j = bisect.bisect_left(free, (n, -1))  # the fullest row that still fits
        if j < len(free):
            space, r = free.pop(j)
        else:
            space, r = seq_len, len(rows)
            rows.append([])
        rows[r].append(i)
        if space - n > 0:
            bisect.insort(free, (space - n, r))
    return rows


def build_rows(tokenized: Sequence[tuple[np.ndarray, np.ndarray]], seq_len: int, seed: int, pad_id: int) -> PackedRows:
    """Pack tokenised examples into ``[R, seq_len]`` rows (see :class:`PackedRows`)."""
    groups = pack([len(ids) for ids, _ in tokenized], seq_len, seed)
    num = len(groups)
    tokens = np.full((num, seq_len), pad_id, np.int32)
    answer = np.zeros((num, seq_len), np.int8)
    segment_ids = np.zeros((num, seq_len), np.int32)
    for r, group in enumerate(groups):
        at = 0
        for seg, i in enumerate(group, start=1):
            ids, mask = tokenized[i]
            n = len(ids)
            tokens[r, at : at + n] = ids
            answer[r, at : at + n] = mask
            segment_ids[r, at : at + n] = seg
            at += n
    return PackedRows(tokens, answer, segment_ids, pad_id)


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Packed rows kept compact (ids, answer mask, segment ids); batch arrays are derived per batch."""

    tokens: np.ndarray  # int32 [R, seq_len], pad_id in padding
    answer: np.ndarray  # int8 [R, seq_len], 1 on answer tokens (EOS included)
    segment_ids: np.ndarray  # int32 [R, seq_len], 1..n per row, 0 = padding
    pad_id: int

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The batch arrays (``BATCH_KEYS``) of rows ``idx``."""
        tokens, answer, segment_ids = self.tokens[idx], self.answer[idx], self.segment_ids[idx]
        # positions restart at 0 in each segment: index minus the index where the segment starts
        index = np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)
        starts = np.ones(tokens.shape, bool)
        starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
        positions = index - np.maximum.accumulate(np.where(starts, index, 0), axis=1)
        positions = np.where(segment_ids > 0, positions, 0).astype(np.int32)
        same_next = np.zeros(tokens.shape, bool)  # the next token belongs to the same example
        same_next[:, :-1] = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, :-1] > 0)
        targets = np.full_like(tokens, self.pad_id)
        targets[:, :-1] = np.where(same_next[:, :-1], tokens[:, 1:], self.pad_id)
        loss_mask = np.zeros(tokens.shape, np.float32)
        loss_mask[:, :-1] = same_next[:, :-1] & (answer[:, 1:] > 0)
        return {
            "input_ids": tokens,
            "targets": targets,
            "loss_mask": loss_mask,
            "segment_ids": segment_ids,
            "positions": positions,
        }


class PackedBatches:
    """Deterministic packed batches of RoCIT data for one process (see the module docstring).

    ``batch(k)`` returns this process's ``global_batch_size // process_count`` rows of global
    batch k, a pure function of ``(cfg.seed, k, shards)``. The process tokenises and packs only
    the examples of its own shards; ``rows`` holds their packed rows, shard after shard.
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer,
        family: str,
        global_batch_size: int,
        process_index: int = 0,
        process_count: int = 1,
        *,
        examples: Sequence[Example],
        source_rows: int | None = None,
    ):
        """Pack ``examples`` (already read by the caller, who may say from how many source rows:
        else unknown, logged as such); :meth:`from_source` reads them from ``cfg.source`` first."""
        self.shards = _check_layout(cfg, global_batch_size, process_index, process_count)
        self.cfg = cfg
        self.rows_per_shard = global_batch_size // self.shards
        per_process = self.shards // process_count
        self.local_shards = range(process_index * per_process, (process_index + 1) * per_process)
        self.stats = DataStats()
        self._orders: dict[int, tuple[int, np.ndarray]] = {}  # local shard -> (epoch, its row order)
        self.stats.rows = source_rows
        pad_id = (
            cfg.pad_id
            if cfg.pad_id is not None
            else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        )
        if not getattr(tokenizer, "is_fast", False):
            logger.warning(
                "data: %s is not a fast tokenizer: tokenising RoleBench will be slow", type(tokenizer).__name__
            )
        packed = [self._pack_shard(shard, examples, tokenizer, family, pad_id) for shard in self.local_shards]
        self.rows = PackedRows(
            *(np.concatenate([getattr(p, f) for p in packed]) for f in ("tokens", "answer", "segment_ids")), pad_id
        )
        self._shard_sizes = np.array([len(p) for p in packed])
        self._shard_starts = np.concatenate([[0], np.cumsum(self._shard_sizes)[:-1]])
        self._count_and_log()

    @classmethod
    def from_source(cls, cfg: DataConfig, tokenizer, family: str, global_batch_size: int) -> PackedBatches:
        """One process's batches of the examples of ``cfg.source``: read (the layout checked first), then packed."""
        _check_layout(cfg, global_batch_size, 0, 1)
        examples, source_rows = load_examples(cfg)
        return cls(cfg, tokenizer, family, global_batch_size, examples=examples, source_rows=source_rows)

    def _pack_shard(self, shard: int, examples: Sequence[Example], tokenizer, family: str, pad_id: int) -> PackedRows:
        cfg = self.cfg
        mine = examples[shard :: self.shards]  # round-robin: every shard gets the same mix of kinds
        if not mine:
            raise DataError(
                f"data.shards={self.shards} but {cfg.source} gives only {len(examples)} examples: "
                f"shard {shard} would be empty; lower data.shards"
            )
        self.stats.examples += len(mine)
        tokenized = tokenize_examples(mine, tokenizer, family, cfg.seq_len, self.stats)
        if not tokenized:
            raise DataError(
                f"{cfg.source}: no training example left in data shard {shard} of {self.shards} "
                f"(rows={self.stats.rows}, "
                f"dropped={self.stats.dropped} whose prompt fills seq_len={cfg.seq_len})"
            )
        return build_rows(tokenized, cfg.seq_len, cfg.seed, pad_id)

    def _count_and_log(self) -> None:
        cfg, stats = self.cfg, self.stats
        stats.packed_rows = len(self.rows)
        stats.tokens = int((self.rows.segment_ids > 0).sum())
        seg = self.rows.segment_ids
        # the first token of an example is never a target, so it never carries loss
        follows = np.zeros(seg.shape, bool)
        follows[:, 1:] = seg[:, 1:] == seg[:, :-1]
        stats.loss_tokens = int(((self.rows.answer > 0) & follows).sum())
        if stats.truncated or stats.dropped:
            logger.warning(
                "data: %d example(s) longer than seq_len=%d were truncated, %d dropped (prompt alone too long)",
                stats.truncated,
                cfg.seq_len,
                stats.dropped,
            )
        where = (
            ""
            if self.shards == 1
            else f" in shards {self.local_shards.start}..{self.local_shards.stop - 1} of {self.shards}"
        )
        logger.info(
            "data: %s rows -> %d examples%s -> %d packed rows of %d (%.1f%% filled), %d loss tokens",
            "?" if stats.rows is None else stats.rows,
            stats.examples,
            where,
            stats.packed_rows,
            cfg.seq_len,
            100 * stats.fill / cfg.seq_len,
            stats.loss_tokens,
        )

    @property
    def num_rows(self) -> int:
        """Packed rows this process holds (its shards only)."""
        return self.stats.packed_rows

    def row_indices(self, step: int) -> np.ndarray:
        """Indices into ``rows`` of this process's part of global batch ``step``, shard after shard."""
        if step < 0:
            raise DataError(f"step={step}: must be >= 0")
        stream = np.arange(step * self.rows_per_shard, (step + 1) * self.rows_per_shard, dtype=np.int64)
        out = []
        for local in range(len(self.local_shards)):
            epochs, offsets = np.divmod(stream, self._shard_sizes[local])
            for epoch in np.unique(epochs):
                out.append(self._shard_starts[local] + self._epoch_order(local, int(epoch))[offsets[epochs == epoch]])
        return np.concatenate(out).astype(np.int64)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch ``step``: dict of ``[local_batch, seq_len]`` arrays."""
        return self.rows.take(self.row_indices(step))

    def _epoch_order(self, local: int, epoch: int) -> np.ndarray:
        """Row order of this process's ``local``-th shard in ``epoch`` (seeded by the global shard index)."""
        if self._orders.get(local, (-1,))[0] != epoch:  # batches walk epochs in order: keep the last permutation
            order = np.arange(self._shard_sizes[local])
            if self.cfg.shuffle:
                order = np.random.default_rng([self.cfg.seed, self.local_shards[local], epoch]).permutation(order)
            self._orders[local] = (epoch, order)
        return self._orders[local][1]


def _check_layout(cfg: DataConfig, global_batch_size: int, process_index: int, process_count: int) -> int:
    """The number of data shards, once the batch divides over processes and shards."""
    if global_batch_size < 1:
        raise DataError(f"global_batch_size={global_batch_size}: must be >= 1")
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} is outside 0..{process_count - 1}")
    if global_batch_size % process_count:
        raise DataError(
            f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}: "
            f"use a multiple of {process_count} ({_near_multiples(global_batch_size, process_count)})"
        )
    shards = cfg.shards or process_count
    if shards % process_count:
        raise DataError(
            f"data.shards={shards} is not a multiple of process_count={process_count}: "
            f"each process loads whole shards ({_near_multiples(shards, process_count)})"
        )
    if global_batch_size % shards:
        raise DataError(
            f"global_batch_size={global_batch_size} is not divisible by data.shards={shards}: "
            f"every batch takes as many rows from each shard ({_near_multiples(shards and global_batch_size, shards)})"
        )
    return shards


def _near_multiples(value: int, of: int) -> str:
    lower = value - value % of
    return f"e.g. {lower or of} or {lower + of}"


def to_global_arrays(local_batch: dict[str, np.ndarray], mesh, sharding=None) -> dict[str, Any]:
    """Assemble each process's rows into global ``jax.Array`` s (batch axis over data x fsdp).

    Process ``i`` holds rows ``i*local .. (i+1)*local-1`` of the global batch, which is the
    block of the batch axis its devices own when the mesh lists devices in process order (as
    ``jax.make_mesh`` does).

    ``sharding`` defaults to the batch axis split over the mesh axes ``data`` and ``fsdp``
    (those the mesh has), the sequence axis replicated.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    if sharding is None:
        batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
        sharding = NamedSharding(mesh, PartitionSpec(batch_axes or None))
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
