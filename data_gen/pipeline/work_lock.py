"""One data_gen command per work folder at a time: two builds on one folder would both pay.

An exclusive ``fcntl.flock`` on ``WORK/.lock`` (which holds the owner's PID, for the message).
The OS drops the lock when the process ends, however it ends, so a SIGKILL never leaves it stale.
The file itself stays: removing it would let a later command lock a new file while a waiting one
locks the old.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from data_gen.errors import UserError

LOCK_NAME = ".lock"
JOURNAL_NAMES = ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm")


class WorkFolderBusyError(UserError):
    """Another process holds the work folder."""


@contextlib.contextmanager
def locked_work_folder(work: Path) -> Iterator[None]:
    """Hold WORK's lock for the block; fails at once, naming the holder's PID, when it is taken."""
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise WorkFolderBusyError(
                f"{work}: in use by another data_gen command (PID {holder}); wait for it to end or use another --work"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_if_unused(work: Path, journal_rows: int) -> None:
    """After a failed start in a folder this command created: remove it if it holds only an empty
    journal and the lock file (nothing paid for, nothing written)."""
    if journal_rows or not work.is_dir():
        return
    entries = list(work.iterdir())
    if any(p.name not in (LOCK_NAME, *JOURNAL_NAMES) or not p.is_file() for p in entries):
        return
    for p in entries:
        p.unlink()
    work.rmdir()
