"""JSON and JSONL files for the whole project: strict reading with file:line:column errors, atomic
writing, and file hashes.

A malformed line is reported as ``file:line: reason``. Policy ``fail`` raises
:class:`DataFileError`; policy ``skip`` drops the line and warns (the count and the first reasons),
so a bad line is never dropped silently. ``parse`` lets a caller validate and convert each decoded
object; a ``ValueError`` it raises is a bad line under the same policy.

Atomic writes (temp file + os.replace) mean a stage killed mid-write leaves either the old file or
the new one, never half a file, which keeps every stage safe to rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from data_gen.errors import UserError

logger = logging.getLogger(__name__)

ON_BAD_LINE = ("fail", "skip")
T = TypeVar("T")


class DataFileError(UserError, ValueError):
    """A data file that cannot be read; the message names the file and line."""


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
        raise DataFileError(f"{path}: cannot open: {e.strerror or e}") from None
    with handle:
        line_number = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as e:  # the rest of the file cannot be trusted
                raise DataFileError(f"{path}:{line_number + 1}: not UTF-8 ({e.reason})") from None
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
                    raise DataFileError(reason) from None
                skipped.append(reason)
                continue
            yield line_number, row
    if skipped:
        shown = "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        logger.warning("%s: skipped %d malformed line(s) (on_bad_line=skip): %s", path, len(skipped), shown)


def read_jsonl(
    path: str | Path, on_bad_line: str = "fail", parse: Callable[[dict[str, Any]], T] | None = None
) -> list[T]:
    """All rows of ``path`` (see :func:`iter_jsonl`), without line numbers."""
    return [row for _, row in iter_jsonl(path, on_bad_line, parse)]


def _short(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e.msg} at column {e.colno})"
    return str(e)


def json_error(where: str | Path, e: json.JSONDecodeError) -> str:
    """The one wording of a JSON syntax error: file, line and column."""
    return f"{where}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})"


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataFileError(f"{path}: cannot open: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: not UTF-8 ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataFileError(json_error(path, e)) from None


def read_json_object(path: str | Path, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON file that must hold one object; ``what`` says which in the error."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFileError(f"{path}: must be {what}, got {type(data).__name__}")
    return data


def dumps_row(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def usual_mode(fd_or_path: int | str | Path) -> None:
    """Give a file the mode the umask gives new files (mkstemp and safetensors make them 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, 0o666 & ~umask)
    else:
        os.chmod(fd_or_path, 0o666 & ~umask)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        usual_mode(fd)  # shard sets and results are for sharing, like other files
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


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))
