"""The one JSONL reader of the JAX side: rows with their file and line number.

A malformed line is reported as ``file:line: reason``. Policy ``fail`` raises
:class:`JsonlError`; policy ``skip`` drops the line and warns (the count and the first
reasons), so a bad line is never dropped silently. ``parse`` lets a caller validate and convert
each decoded object; a ``ValueError`` it raises is a bad line under the same policy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

ON_BAD_LINE = ("fail", "skip")
T = TypeVar("T")


class JsonlError(ValueError):
    """A malformed JSONL line; the message is ``file:line: reason``."""


def iter_jsonl(
    path: str | Path,
    on_bad_line: str = "fail",
    parse: Callable[[dict[str, Any]], T] | None = None,
) -> Iterator[tuple[int, T]]:
    """Yield ``(line_number, row)`` for every non-blank line of ``path`` (1-based numbers).

    Each line must hold a JSON object. With ``parse`` the yielded row is ``parse(obj)``.
    """
    if on_bad_line not in ON_BAD_LINE:
        raise ValueError(f"on_bad_line={on_bad_line!r}: expected one of {ON_BAD_LINE}")
    path = Path(path)
    skipped: list[str] = []
    try:
        handle = path.open(encoding="utf-8")
    except OSError as e:
        raise JsonlError(f"{path}: cannot open: {e.strerror or e}") from None
    with handle:
        line_number = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as e:  # the rest of the file cannot be trusted
                raise JsonlError(f"{path}:{line_number + 1}: not UTF-8 ({e.reason})") from None
            if not line:
                break
            line_number += 1
            if not line.strip():
                continue  # blank lines (a trailing newline, a separator) carry no row
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                row = parse(obj) if parse is not None else obj
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                reason = f"{path}:{line_number}: {_short(e)}"
                if on_bad_line == "fail":
                    raise JsonlError(reason) from None
                skipped.append(reason)
                continue
            yield line_number, row
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        logger.warning("%s: skipped %d malformed line(s) (on_bad_line=skip): %s", path, len(skipped), shown)


def read_jsonl(path: str | Path, on_bad_line: str = "fail", parse: Callable[[dict[str, Any]], T] | None = None) -> list[T]:
    """All rows of ``path`` (see :func:`iter_jsonl`), without line numbers."""
    return [row for _, row in iter_jsonl(path, on_bad_line, parse)]


def _short(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e.msg} at column {e.colno})"
    return str(e)
