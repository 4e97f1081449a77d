"""JSONL and JSON files for data_gen: strict reading with file:line errors, atomic writing.

Atomic writes (temp file + os.replace) mean a stage killed mid-write leaves either the old file or
the new one, never half a file, which keeps every stage safe to rerun.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataFileError(Exception):
    """A data file that cannot be read; the message names the file and line."""


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    for _, row in iter_jsonl_numbered(path):
        yield row


def iter_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs; blank lines are skipped."""
    path = Path(path)
    try:
        fh = path.open(encoding="utf-8")
    except OSError as e:
        raise DataFileError(f"{path}: cannot open ({e.strerror})") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFileError(f"{path}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataFileError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            yield n, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes it 0600: shard sets are for sharing, like other files
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [dumps_row(r) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataFileError(f"{path}: cannot open ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
