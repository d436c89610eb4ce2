"""Let one process at a time own a journal: an OS lock on a file beside it.

Two runs of one journal would each create the predictions the other is creating (a cron
overlap is enough). `JournalLock` takes ``flock(LOCK_EX | LOCK_NB)`` on
``<journal>.lock`` and writes the holder's pid and host into it for the message the
loser prints. The kernel drops the lock when the holder's file is closed, so a process
killed with SIGKILL never leaves a stale lock: the file's text may outlive it, but only
the lock counts. The file is never removed (removing it would let a third process lock a
fresh inode while a second still holds the old one). Read-only commands (``status``,
``export``) do not lock. ``flock`` locks are advisory and, on NFS, may be emulated with
``fcntl`` byte-range locks by the client: keep a journal on a local disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from engine._errors import JournalLockedError, StorageError
from jobs.names import ENGINE_FILES

__all__ = ["JournalLock", "lock_path"]


def lock_path(journal: Path) -> Path:
    """Return the lock file of ``journal``: ``journal.jsonl.lock`` beside it."""
    return journal.with_name(journal.name + ENGINE_FILES.lock_suffix)


class JournalLock:
    """Hold the lock of one journal while the ``with`` block runs (a sync context manager).

    Raise `JournalLockedError` at once (never wait) when another process holds it.
    """

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.path = lock_path(journal)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `JournalLockedError` naming its holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot open the journal's lock {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StorageError(
                    f"cannot lock the journal {self.journal}: {exc.strerror or exc}"
                ) from exc
            who = holder or "another process"
            raise JournalLockedError(
                f"the journal {self.journal} is in use by {who}: one run at a time owns "
                "a journal (wait for it to finish, or stop it)",
                holder=holder,
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time())}
        with contextlib.suppress(OSError):  # the text is for messages only; the lock holds
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file is what releases it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str | None:
    """Return "pid N on HOST" from the lock file's text, or None when it says nothing."""
    try:
        data = json.loads(os.pread(fd, 4096, 0))
        return f"pid {int(data['pid'])} on {data['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None
