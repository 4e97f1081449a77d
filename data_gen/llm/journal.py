"""The durable journal of answered requests: SQLite in WAL mode, keyed by the request key."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from data_gen.llm.types import ChatResult


# -------------------------------------------------------------------------------------- journal
class Journal:
    """SQLite (WAL) store of request outcomes. Each ``put`` is its own committed transaction, so a
    SIGKILL loses at most the request in flight (which was then never used)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (only an OS crash may lose the last commits).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, request TEXT,"
            " text TEXT, finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER,"
            " cost REAL, error TEXT, created REAL)"
        )

    def get(self, key: str) -> ChatResult | None:
        row = self.db.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens, cost, error FROM responses WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return ChatResult(key, row[0], row[1], row[2], row[3], row[4], row[5], cached=True)

    def put(self, model: str, request: dict[str, Any], r: ChatResult) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                r.key,
                model,
                json.dumps(request, ensure_ascii=False, sort_keys=True),
                r.text,
                r.finish_reason,
                r.prompt_tokens,
                r.completion_tokens,
                r.cost,
                r.error,
                time.time(),
            ),
        )

    def delete_failed(self) -> int:
        return self.db.execute("DELETE FROM responses WHERE error IS NOT NULL").rowcount

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def count_rows(path: str | Path) -> int:
    """Rows of a journal file without creating it (0 when it is absent or unreadable)."""
    path = Path(path)
    if not path.is_file():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0
