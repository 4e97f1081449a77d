"""RoleBench rows -> training examples: one per reference answer (``references_per_row``), each
with its role's system instruction; plus, with ``data.conversations``, multi-turn rows
(conversations.py, loss on every assistant turn); then rendered and tokenised (chat_format,
batched) and cut to ``seq_len``. Packing them into batches is packing.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from data_gen import rolebench as schema
from rolellm_jax.data import chat_format as chat
from rolellm_jax.data import rolebench_source as rolebench
from rolellm_jax.data.conversations import Conversation, card_conversations, read_conversations
from rolellm_jax.errors import UserError

logger = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """A data configuration or dataset that cannot give training batches (message says why)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where RoCIT data comes from and how it is batched.

    The defaults are ours: the RoleLLM paper does not publish its training data settings
    (sequence length, mixing, packing); the paper trains on general and role-specific data mixed.
    """

    # A folder in the original RoleBench layout, our release folder, or a Hub dataset id.
    source: str = "release/rolebench-demo"
    # eng (or en) | zh, kept as eng / zh; or a list of both ([zh, eng]) to mix the languages' rows,
    # each example with its own language's system instruction
    lang: str | tuple[str, ...] = "eng"
    setting: str = "instruction_generalization"  # | role_generalization (eng only)
    # Which kinds are mixed into training: a list for every language, or a mapping from each of
    # ``lang``'s languages to its own list ({zh: [general, role_specific], eng: [role_specific]})
    kinds: tuple[str, ...] | dict[str, tuple[str, ...]] = ("general", "role_specific")
    # A JSONL of multi-turn conversations ({"messages": [...]} or ShareGPT's {"conversations": [...]})
    # mixed in, loss on every assistant turn; with kinds=[] they are the only training rows.
    conversations: str | None = None
    cards: str | None = None  # a folder of character cards whose example dialogues are mixed in likewise
    role_specific_repeat: int = 1  # times each role-specific example is repeated (upweights knowledge)
    split: str = "train"
    seq_len: int = 1024  # tokens per packed row (the model's T)
    references_per_row: str = "all"  # all | first | N (a row with N answers gives <= N examples)
    on_bad_line: str = "fail"  # fail | skip (skipped lines are counted in a warning)
    max_rows: int | None = None  # cap on rows per kind (after reading, before shuffling); None = all
    seed: int = 0  # packing order and per-epoch shuffling
    # Examples are dealt into this many shards, packed and shuffled each on its own; a process
    # loads only its shards. None = one per process. Keep it fixed to get the same batches
    # when resuming on a different number of hosts.
    shards: int | None = None
    shuffle: bool = True  # False: rows in packing order every epoch (debugging)
    pad_id: int | None = None  # None: the tokenizer's pad id, else its EOS id (padding is masked anyway)

    def __post_init__(self):
        try:
            if isinstance(self.lang, (list, tuple)):
                langs = tuple(dict.fromkeys(schema.canonical_lang(x, "data.lang") for x in self.lang))
                if not langs:
                    raise DataError("data.lang=[]: expected a language (eng or zh) or a list of them")
                object.__setattr__(self, "lang", langs[0] if len(langs) == 1 else langs)
            else:
                object.__setattr__(self, "lang", schema.canonical_lang(self.lang, "data.lang"))
            if isinstance(self.kinds, dict):
                kinds = {schema.canonical_lang(k, "data.kinds"): v for k, v in self.kinds.items()}
                if set(kinds) != set(self.langs):
                    raise DataError(
                        f"data.kinds names languages {sorted(kinds)}, data.lang {list(self.langs)}: "
                        "a kinds mapping needs exactly data.lang's languages"
                    )
                object.__setattr__(self, "kinds", {lang: _kind_tuple(kinds[lang]) for lang in self.langs})
            else:
                object.__setattr__(self, "kinds", _kind_tuple(self.kinds))
        except schema.RoleBenchError as e:
            raise DataError(str(e)) from None
        if not self.kinds and not (self.conversations or self.cards):
            raise DataError(
                f"data.kinds=[]: expected a subset of {schema.KINDS}, "
                "non-empty unless data.conversations or data.cards gives the rows"
            )
        for lang in self.langs if self.kinds else ():
            kinds = self.kinds_of(lang)
            if not kinds or any(k not in schema.KINDS for k in kinds):
                raise DataError(f"data.kinds={list(kinds)!r}: expected a non-empty subset of {schema.KINDS}")
            for kind in kinds:  # lang / setting / kind combination (zh has no role_generalization)
                try:
                    schema.config_name(lang, self.setting, kind)
                except schema.RoleBenchError as e:
                    raise DataError(f"data.{e}") from None
        if self.split not in schema.SPLITS:
            raise DataError(f"data.split={self.split!r}: expected one of {schema.SPLITS}")
        if self.on_bad_line not in ("fail", "skip"):
            raise DataError(f"data.on_bad_line={self.on_bad_line!r}: expected 'fail' or 'skip'")
        if self.seq_len < 2:
            raise DataError(f"data.seq_len={self.seq_len}: must be at least 2")
        if self.shards is not None and self.shards < 1:
            raise DataError(f"data.shards={self.shards}: must be >= 1 (or null: one per process)")
        if self.role_specific_repeat < 1:
            raise DataError(f"data.role_specific_repeat={self.role_specific_repeat}: must be >= 1")
        self.references_limit()  # validates

    @property
    def langs(self) -> tuple[str, ...]:
        """The languages whose rows are mixed (one for a plain ``lang``)."""
        return self.lang if isinstance(self.lang, tuple) else (self.lang,)

    def kinds_of(self, lang: str) -> tuple[str, ...]:
        """The kinds read for one of ``langs``."""
        return self.kinds[lang] if isinstance(self.kinds, dict) else self.kinds

    def references_limit(self) -> int | None:
        """How many references per row become examples (None = all)."""
        value = str(self.references_per_row)
        if value == "all":
            return None
        if value == "first":
            return 1
        if value.isdigit() and int(value) >= 1:
            return int(value)
        raise DataError(f"data.references_per_row={self.references_per_row!r}: expected 'all', 'first' or N >= 1")


def _kind_tuple(kinds) -> tuple[str, ...]:
    """YAML gives lists; "general" alone means one kind."""
    return (kinds,) if isinstance(kinds, str) else tuple(kinds)


@dataclasses.dataclass
class DataStats:
    """What loading did; logged once and kept for the run's manifest."""

    rows: int | None = 0  # RoleBench rows read (None: examples handed in without a row count)
    examples: int = 0
    truncated: int = 0  # longer than seq_len: cut to seq_len (the answer lost its end)
    dropped: int = 0  # prompt alone filled seq_len: no answer token left to learn from
    packed_rows: int = 0
    tokens: int = 0  # non-padding tokens in packed rows
    loss_tokens: int = 0

    @property
    def fill(self) -> float:
        return 0.0 if not self.packed_rows else self.tokens / self.packed_rows


@dataclasses.dataclass(frozen=True)
class Example:
    """One rendered training example (role, question, one reference answer)."""

    system: str
    question: str
    answer: str

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.system, self.question, self.answer)


def load_examples(cfg: DataConfig) -> tuple[list[Example | Conversation], int]:
    """The training examples of ``cfg`` (RoleBench examples, then the conversations of
    ``data.conversations`` and ``data.cards``) and the number of rows they came from.

    Refuses held-out role-generalisation roles and roles without a description.
    """
    if cfg.split != "train":  # allowed (a deliberate overfit, a smoke test), never unnoticed
        logger.warning(
            "data.split=%s: training on the rows that evaluation scores against; "
            "scores on this split will not be held out",
            cfg.split,
        )
    conversations = read_conversations(cfg.conversations, cfg.on_bad_line) if cfg.conversations else []
    if cfg.conversations and not conversations:
        raise DataError(f"data.conversations={cfg.conversations}: no conversation in this file")
    if cfg.cards:
        from_cards = card_conversations(cfg.cards)
        if not from_cards:
            raise DataError(f"data.cards={cfg.cards}: no card has an example dialogue with a user turn and an answer")
        conversations += from_cards
    examples: list[Example | Conversation] = []
    rows_read = 0
    for lang in cfg.langs if cfg.kinds else ():
        lang_examples, lang_rows = _examples_of_lang(cfg, lang)
        examples += lang_examples
        rows_read += lang_rows
    return examples + conversations, rows_read + len(conversations)


def _examples_of_lang(cfg: DataConfig, lang: str) -> tuple[list[Example], int]:
    rows: list[schema.RoleRow] = []
    for kind in cfg.kinds_of(lang):
        kind_rows = rolebench.read_rows(cfg.source, lang, cfg.setting, kind, cfg.split, cfg.on_bad_line)
        rows.extend(kind_rows[: cfg.max_rows] if cfg.max_rows is not None else kind_rows)
    if cfg.setting == "role_generalization":
        rolebench.check_no_held_out_roles(rows, rolebench.held_out_roles(cfg.source, lang))
    descriptions = rolebench.describe(
        rows, rolebench.read_descriptions(cfg.source, lang), f"{cfg.source} profiles-{lang}"
    )
    systems = {role: chat.role_system_text(lang, role, desc) for role, desc in descriptions.items()}
    limit = cfg.references_limit()
    examples = []
    for row in rows:
        repeat = cfg.role_specific_repeat if row.kind == "role_specific" else 1
        for answer in row.answers[:limit]:
            examples.extend([Example(systems[row.role], row.question, answer)] * repeat)
    return examples, len(rows)


def tokenize_examples(
    examples: Sequence[Example | Conversation],
    tokenizer,
    family: str,
    seq_len: int,
    stats: DataStats,
    chunk: int = 1024,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(ids, answer_mask)`` per example (in order), truncated to ``seq_len``; counts truncated/dropped."""
    out = []
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        single = [e for e in part if isinstance(e, Example)]
        rendered_single = iter(
            chat.render_examples(
                tokenizer, family, [e.system for e in single], [e.question for e in single], [e.answer for e in single]
            )
        )
        rendered = [
            next(rendered_single) if isinstance(e, Example) else _render_conversation(tokenizer, family, e)
            for e in part
        ]
        for ids, mask in rendered:
            if len(ids) > seq_len:
                ids, mask = ids[:seq_len], mask[:seq_len]
                if not any(mask[1:]):  # the first token is never a target
                    stats.dropped += 1
                    continue
                stats.truncated += 1
            out.append((np.asarray(ids, np.int32), np.asarray(mask, np.int8)))
    return out


def _render_conversation(tokenizer, family: str, conversation: Conversation) -> tuple[list[int], list[int]]:
    try:
        return chat.render_conversation(tokenizer, family, conversation.messages)
    except chat.ChatFormatError as err:
        raise chat.ChatFormatError(f"{conversation.source}: {err}") from None
