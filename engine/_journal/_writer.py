"""Append journal records with group commit: one write and one fsync per batch.

`Journal` appends with group commit: one writer task writes everything appended within
``flush_interval`` in one ``write()`` and one ``fsync()``, so durability costs one fsync per
batch, not per record.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio

from engine._errors import StorageError
from engine._journal._lock import JournalLock
from engine._journal._records import JournalRecord

__all__ = ["Journal", "JournalStats"]


@dataclass(slots=True)
class JournalStats:
    """Count what the journal did, for tests and benchmarks."""

    appends: int = 0
    writes: int = 0  # batches written, one write() each
    fsyncs: int = 0
    bytes: int = 0


@dataclass(slots=True, eq=False)
class _Batch:
    """Lines appended within one flush interval, and who waits for their fsync."""

    lines: list[bytes] = field(default_factory=list)
    durable: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    error: StorageError | None = None


class Journal:
    """Append records to a journal file with group commit.

    Use ``async with Journal(path) as journal:``.
    One writer task collects the lines appended within ``flush_interval``, writes them in
    one ``write()`` and, when any of them is durable, fsyncs once. A non-durable record is
    written in the next batch and becomes durable with the next fsync. On exit everything
    pending is written and fsynced, even when the surrounding scope is being cancelled.

    Opening takes the journal's `JournalLock` (`JournalLockedError` when another process
    holds it) unless ``locked`` says the caller already holds it, as `run_jobs` does from
    before its replay. ``manifest`` is recorded in the run header (additive field).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.02,
        locked: bool = False,
        manifest: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._lock_file = None if locked else JournalLock(self.path)
        self._manifest = manifest
        self.flush_interval = flush_interval
        self.stats = JournalStats()
        self.repaired = False  # a torn last line was closed with a newline at open
        self._fd: int | None = None
        self._batch = _Batch()
        self._wake = anyio.Event()
        self._lock = anyio.Lock()  # one write+fsync at a time, in append order
        self._error: StorageError | None = None
        self._closed = False
        self._unsynced = False  # written since the last fsync
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.enter_async_context(self._running())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None, "journal was not entered"
        stack, self._stack = self._stack, None
        return await stack.__aexit__(exc_type, exc, tb)

    async def append(self, record: JournalRecord, *, durable: bool = False) -> None:
        """Queue ``record``; with ``durable``, return only once it is written and fsynced.

        Raise ValueError (before queueing) when the record holds something like a token,
        and `StorageError` when the disk refused the write.
        """
        line = record.to_line()
        if self._error is not None:
            raise StorageError(str(self._error)) from self._error.__cause__
        if self._closed or self._fd is None:
            raise RuntimeError("the journal is not open")
        batch = self._batch
        batch.lines.append(line)
        self.stats.appends += 1
        self._wake.set()
        if durable:
            batch.durable = True
            await batch.done.wait()
            if batch.error is not None:
                raise StorageError(str(batch.error)) from batch.error.__cause__

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        if self._lock_file is not None:
            await anyio.to_thread.run_sync(self._lock_file.acquire)
        try:
            self._fd = await anyio.to_thread.run_sync(self._open_sync)
        except BaseException:
            if self._lock_file is not None:
                self._lock_file.release()
            raise
        body_error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                await self.append(JournalRecord.run(manifest=self._manifest))
                try:
                    yield
                except Exception as exc:  # noqa: BLE001 (re-raised below, outside the group)
                    # Raised past the task group it would come out wrapped in a group.
                    body_error = exc
                finally:
                    with anyio.CancelScope(shield=True):
                        self._closed = True
                        await self._flush(force_fsync=True)
                    tg.cancel_scope.cancel()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
            if self._lock_file is not None:
                self._lock_file.release()
        if body_error is not None:
            raise body_error
        if self._error is not None:
            raise StorageError(str(self._error)) from self._error.__cause__

    def _open_sync(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise _storage_error(self.path, "open", exc) from exc
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A kill mid-write left a partial line: start the next record on its own
                # line so only the fragment is lost (replay counts it as torn).
                os.write(fd, b"\n")
                self.repaired = True
        except OSError as exc:
            os.close(fd)
            raise _storage_error(self.path, "repair", exc) from exc
        return fd

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            # Let concurrent appends join this batch: the heart of group commit.
            await anyio.sleep(self.flush_interval)
            self._wake = anyio.Event()
            # Shielded so a batch is never half-handled: written and its waiters woken.
            with anyio.CancelScope(shield=True):
                await self._flush(force_fsync=False)

    async def _flush(self, *, force_fsync: bool) -> None:
        async with self._lock:
            batch, self._batch = self._batch, _Batch()
            data = b"".join(batch.lines)
            fsync = batch.durable or (force_fsync and (self._unsynced or bool(data)))
            if (data or fsync) and self._error is None:
                try:
                    await anyio.to_thread.run_sync(self._write_sync, data, fsync)
                except StorageError as exc:
                    # Stop writing: later lines after a failed one could not be trusted.
                    self._error = exc
            batch.error = self._error
            batch.done.set()

    def _write_sync(self, data: bytes, fsync: bool) -> None:
        fd = self._fd
        assert fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if data:
                self._unsynced = True
                self.stats.writes += 1
                self.stats.bytes += len(data)
            if fsync:
                os.fsync(fd)
                self._unsynced = False
                self.stats.fsyncs += 1
        except OSError as exc:
            raise _storage_error(self.path, "write", exc) from exc


def _storage_error(path: Path, what: str, exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    return StorageError(f"cannot {what} the journal {path}: {reason}")
