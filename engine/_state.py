"""Keep the resumable state of a run: an append-only JSONL journal and its pure replay.

One compact JSON object per line, ``{"k": key, "e": event, "ts": unix, ...}``:

========== =====================================================================
event      fields
========== =====================================================================
run        ``v`` format version (key ``""``; written each time the journal opens)
creating   ``a`` attempt number, ``ih`` input digest (reconciles a crash mid-create)
created    ``p`` prediction id, ``a`` attempt number
succeeded  ``p``, ``o`` output URLs (null when the output holds data: URIs or text),
           ``pt`` predict_time
file       ``n`` name relative to the output folder, ``sz`` size, ``sha`` sha256, ``p``
done       ``p``, ``pt`` predict_time
failed     ``p`` (or null), ``err`` message, ``cls`` error class, ``perm`` permanent, ``a``
canceled   ``p``, ``why``
========== =====================================================================

`replay` folds lines into one `JobState` per key and never raises on bad input: a torn
last line (kill -9 mid-write) and corrupt lines are skipped and counted. A ``creating``
starts an attempt afresh (only the attempt count carries over); ``file`` adds an output
without changing the status; the other events set the status they are named after.

`Journal` appends with group commit: one writer task writes everything appended within
``flush_interval`` in one ``write()`` and one ``fsync()``, so durability costs one fsync per
batch, not per record. `compact` rewrites a journal as one minimal record set per job.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from sys import intern
from types import TracebackType
from typing import Any, Self, cast

import anyio

from engine._errors import StorageError
from jobs.model import JobStatus, OutputFile

__all__ = [
    "FORMAT_VERSION",
    "JobState",
    "Journal",
    "JournalEvent",
    "JournalRecord",
    "JournalStats",
    "Replay",
    "compact",
    "compacted_records",
    "journal_summary",
    "load_journal",
    "replay",
]

FORMAT_VERSION = 1
MAX_ERROR_CHARS = 500
_READ_CHUNK = 1 << 20
# The decoder's C scanner, without json.loads' Python wrappers (as costly again per line).
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class JournalEvent(StrEnum):
    """Name one kind of journal record (the ``e`` field)."""

    RUN = "run"
    CREATING = "creating"
    CREATED = "created"
    SUCCEEDED = "succeeded"
    FILE = "file"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"


# Which record attributes each event carries, and their short names on disk.
_FIELDS: dict[JournalEvent, tuple[tuple[str, str], ...]] = {
    JournalEvent.RUN: (("version", "v"),),
    JournalEvent.CREATING: (("attempt", "a"), ("input_digest", "ih")),
    JournalEvent.CREATED: (("prediction_id", "p"), ("attempt", "a")),
    JournalEvent.SUCCEEDED: (("prediction_id", "p"), ("outputs", "o"), ("predict_time", "pt")),
    JournalEvent.FILE: (("name", "n"), ("size", "sz"), ("sha256", "sha"), ("prediction_id", "p")),
    JournalEvent.DONE: (("prediction_id", "p"), ("predict_time", "pt")),
    JournalEvent.FAILED: (
        ("prediction_id", "p"),
        ("error", "err"),
        ("error_class", "cls"),
        ("permanent", "perm"),
        ("attempt", "a"),
    ),
    JournalEvent.CANCELED: (("prediction_id", "p"), ("why", "why")),
}


def _now() -> float:
    return round(time.time(), 3)


def _ts(ts: float | None) -> float:
    return _now() if ts is None else ts


def _refuse_secrets(value: object) -> None:
    """Raise ValueError when ``value`` (or a string inside it) looks like an API token."""
    if isinstance(value, str):
        if value.startswith("r8_") or "Bearer " in value:
            raise ValueError("refusing to journal a value that looks like an API token")
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_secrets(item)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal line. Build it with the per-event constructors (`created`, ...).

    There is deliberately no free-form field: nothing a token could hide in, and
    `to_line` refuses any string that looks like one anyway.
    """

    key: str
    event: JournalEvent
    ts: float = field(default_factory=_now)
    attempt: int | None = None
    input_digest: str | None = None
    prediction_id: str | None = None
    outputs: tuple[str, ...] | None = None
    name: str | None = None
    size: int | None = None
    sha256: str | None = None
    predict_time: float | None = None
    error: str | None = None
    error_class: str | None = None
    permanent: bool | None = None
    why: str | None = None
    version: int | None = None

    @classmethod
    def run(cls, *, ts: float | None = None) -> Self:
        """Return the header written each time a journal is opened."""
        return cls("", JournalEvent.RUN, _ts(ts), version=FORMAT_VERSION)

    @classmethod
    def creating(
        cls, key: str, *, attempt: int, input_digest: str, ts: float | None = None
    ) -> Self:
        """Return the record written just before a create request is sent."""
        return cls(key, JournalEvent.CREATING, _ts(ts), attempt=attempt, input_digest=input_digest)

    @classmethod
    def created(
        cls, key: str, *, prediction_id: str, attempt: int, ts: float | None = None
    ) -> Self:
        """Return the record of a create the API accepted."""
        return cls(key, JournalEvent.CREATED, _ts(ts), attempt=attempt, prediction_id=prediction_id)

    @classmethod
    def succeeded(
        cls,
        key: str,
        *,
        prediction_id: str,
        outputs: Iterable[str] | None,
        predict_time: float | None = None,
        ts: float | None = None,
    ) -> Self:
        """Return the record of a successful prediction (``outputs`` None: re-GET it)."""
        urls = None if outputs is None else tuple(outputs)
        return cls(
            key,
            JournalEvent.SUCCEEDED,
            _ts(ts),
            prediction_id=prediction_id,
            outputs=urls,
            predict_time=predict_time,
        )

    @classmethod
    def file(
        cls, key: str, *, output: OutputFile, prediction_id: str, ts: float | None = None
    ) -> Self:
        """Return the record of one output file verified and renamed into place."""
        return cls(
            key,
            JournalEvent.FILE,
            _ts(ts),
            prediction_id=prediction_id,
            name=output.name,
            size=output.size,
            sha256=output.sha256,
        )

    @classmethod
    def done(
        cls,
        key: str,
        *,
        prediction_id: str,
        predict_time: float | None = None,
        ts: float | None = None,
    ) -> Self:
        """Return the record of a job whose every output is on disk."""
        return cls(
            key,
            JournalEvent.DONE,
            _ts(ts),
            prediction_id=prediction_id,
            predict_time=predict_time,
        )

    @classmethod
    def failed(
        cls,
        key: str,
        *,
        prediction_id: str | None,
        error: str,
        error_class: str,
        permanent: bool,
        attempt: int,
        ts: float | None = None,
    ) -> Self:
        """Return the record of a failed attempt (the message is cut to 500 characters)."""
        return cls(
            key,
            JournalEvent.FAILED,
            _ts(ts),
            attempt=attempt,
            prediction_id=prediction_id,
            error=error[:MAX_ERROR_CHARS],
            error_class=error_class,
            permanent=permanent,
        )

    @classmethod
    def canceled(
        cls, key: str, *, prediction_id: str | None, why: str, ts: float | None = None
    ) -> Self:
        """Return the record of a job canceled by us or on Replicate."""
        return cls(key, JournalEvent.CANCELED, _ts(ts), prediction_id=prediction_id, why=why)

    def to_obj(self) -> dict[str, Any]:
        """Return the JSON object written for this record, with short field names."""
        obj: dict[str, Any] = {"k": self.key, "e": self.event.value, "ts": self.ts}
        for attr, short in _FIELDS[self.event]:
            value = getattr(self, attr)
            obj[short] = list(value) if isinstance(value, tuple) else value
        return obj

    def to_line(self) -> bytes:
        """Return the record as one compact JSON line, newline included.

        Raise ValueError when any value looks like an API token.
        """
        obj = self.to_obj()
        for value in obj.values():
            _refuse_secrets(value)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> Self:
        """Parse a decoded journal object; raise ValueError when it is not a record."""
        try:
            event = JournalEvent(obj["e"])
            key, ts = obj["k"], obj["ts"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a journal record: {obj!r:.200}") from exc
        if not isinstance(key, str) or not isinstance(ts, int | float):
            raise TypeError(f"not a journal record: {obj!r:.200}")
        values = {attr: obj.get(short) for attr, short in _FIELDS[event]}
        outputs = values.get("outputs")
        if isinstance(outputs, list):
            values["outputs"] = tuple(outputs)
        return cls(key, event, float(ts), **values)


@dataclass(frozen=True, slots=True)
class JobState:
    """The replayed state of the job ``key``; absent from the replay means pending.

    ``key`` is the very string the replay's mapping is keyed by: a run that keeps a key
    (the report lists skipped failed jobs) keeps this one instead of a copy per job.
    ``creating_since``/``input_digest`` are set only while ``status`` is creating, to find
    a prediction whose create was in flight at a crash. ``files`` are the outputs verified
    so far, ``outputs`` the URLs still to fetch (None: re-GET the prediction).
    """

    key: str
    status: JobStatus
    prediction_id: str | None = None
    attempts: int = 0
    creating_since: float | None = None
    input_digest: str | None = None
    outputs: tuple[str, ...] | None = None
    files: tuple[OutputFile, ...] = ()
    error: str | None = None
    error_class: str | None = None
    permanent: bool = False
    predict_time: float | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """The result of replaying a journal: the state per key and what was skipped."""

    jobs: Mapping[str, JobState]
    records: int = 0
    runs: int = 0  # how many times the journal was opened
    torn_lines: int = 0  # partial lines left by a kill mid-write
    corrupt_lines: int = 0  # any other line that is not a valid record


_S = JobStatus


class _Fold:
    """One job's state while the journal is folded: a mutable twin of `JobState`.

    A frozen dataclass per line would double the load time, and even one per job at the
    end costs 2 us a job (``object.__setattr__`` per field). The twin has the very slots
    of `JobState`, so a finished fold becomes its state in place (Python allows
    ``__class__`` assignment between classes of one layout): no second object, no copy.
    Until then ``files`` holds (name, size, sha256) triples, not `OutputFile` values.
    """

    __slots__ = JobState.__slots__

    key: str  # set by `freeze`
    status: JobStatus
    prediction_id: str | None
    attempts: int
    creating_since: float | None
    input_digest: str | None
    outputs: tuple[str, ...] | None
    files: tuple[Any, ...]
    error: str | None
    error_class: str | None
    permanent: bool
    predict_time: float | None

    def __init__(self) -> None:
        self.status, self.prediction_id, self.attempts = _S.PENDING, None, 0
        self.creating_since, self.input_digest, self.outputs, self.files = None, None, None, ()
        self.error, self.error_class, self.permanent, self.predict_time = None, None, False, None

    @classmethod
    def thaw(cls, state: JobState) -> _Fold:
        """Return a fold holding a copy of ``state`` (which stays as it is)."""
        st = cls()
        for name in cls.__slots__:
            setattr(st, name, getattr(state, name))
        st.files = tuple([(f.name, f.size, f.sha256) for f in state.files])
        return st

    def freeze(self, key: str) -> JobState:
        """Turn this fold into the `JobState` of ``key``, in place, and return it."""
        self.key = key
        if self.files:
            self.files = tuple([OutputFile(n, sz, sha) for n, sz, sha in self.files])
        self.__class__ = JobState  # type: ignore[assignment]  # the twin's whole point
        return cast(JobState, self)


def _apply(st: _Fold, obj: dict[str, Any]) -> None:
    """Apply the record ``obj`` to ``st``; raise KeyError/TypeError/ValueError if bad.

    Every field is read and checked before ``st`` changes, so a bad record changes nothing.
    """
    e = obj["e"]
    if e == "file":
        item = (_str(obj["n"]), _int(obj["sz"]), _str(obj["sha"]))
        # A download redone after a crash journals its file again: keep the latest. A
        # tuple, shared empty by default: most jobs of a long journal have no file list
        # to grow, and an empty list per job is 72 bytes times a million.
        st.files = (*[f for f in st.files if f[0] != item[0]], item)
    elif e == "created":
        pid, attempt = _str(obj["p"]), _int(obj["a"])
        if pid != st.prediction_id:
            st.files = ()  # files of an earlier prediction are not this one's outputs
        st.status, st.prediction_id, st.attempts = _S.RUNNING, pid, max(st.attempts, attempt)
        st.creating_since = st.input_digest = st.outputs = st.error = st.error_class = None
        st.permanent, st.predict_time = False, None
    elif e == "creating":
        attempt, since, digest = _int(obj["a"]), _num(obj["ts"]), _str(obj["ih"])
        # A new attempt starts clean: only the attempt count carries over.
        st.status, st.prediction_id, st.attempts = _S.CREATING, None, attempt
        st.creating_since, st.input_digest, st.outputs, st.files = since, digest, None, ()
        st.error = st.error_class = st.predict_time = None
        st.permanent = False
    elif e == "succeeded":
        pid, urls, pt = _str(obj["p"]), obj["o"], _opt_num(obj.get("pt"))
        if urls is not None:
            urls = tuple([_str(u) for u in urls])
        st.status, st.prediction_id, st.outputs, st.predict_time = _S.SUCCEEDED, pid, urls, pt
        st.creating_since = st.input_digest = st.error = st.error_class = None
        st.permanent = False
    elif e == "done":
        pid, pt = _str(obj["p"]), _opt_num(obj.get("pt"))
        st.status, st.prediction_id = _S.DONE, pid
        st.creating_since = st.input_digest = st.outputs = st.error = st.error_class = None
        st.permanent = False
        if pt is not None:
            st.predict_time = pt
    elif e == "failed":
        pid, attempt = obj["p"], _int(obj["a"])
        # Failed jobs of one batch mostly share their messages: keep one copy of each.
        err, cls, perm = intern(_str(obj["err"])), intern(_str(obj["cls"])), obj["perm"] is True
        if pid is not None:
            st.prediction_id = _str(pid)
        st.status, st.attempts = _S.FAILED, max(st.attempts, attempt)
        st.creating_since = st.input_digest = st.outputs = None
        st.error, st.error_class, st.permanent = err, cls, perm
    elif e == "canceled":
        pid, why = obj["p"], intern(_str(obj["why"]))
        if pid is not None:
            st.prediction_id = _str(pid)
        st.status, st.error = _S.CANCELED, why
        st.creating_since = st.input_digest = st.outputs = st.error_class = None
        st.permanent = False
    else:
        raise ValueError(f"unknown event {e!r}")


def _check_tail(line: str, end: int) -> None:
    if not line[end:].isspace():
        raise ValueError("trailing data after the JSON object")


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("expected an integer")
    return v


def _num(v: object) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise TypeError("expected a number")
    return float(v)


def _opt_num(v: object) -> float | None:
    return None if v is None else _num(v)


class _Replayer:
    """Fold lines into states; the mutable core behind `replay` and `load_journal`."""

    def __init__(self, start: Replay | None) -> None:
        self.jobs: dict[str, _Fold] = {}
        self.records = self.runs = self.torn = self.corrupt = 0
        if start is not None:
            self.jobs = {key: _Fold.thaw(state) for key, state in start.jobs.items()}
            self.records, self.runs = start.records, start.runs
            self.torn, self.corrupt = start.torn_lines, start.corrupt_lines
        # The last unparsable line: torn if a run header (a reopen) or the end follows it.
        self.bad: str | bytes | None = None

    def feed(self, lines: Iterable[str | bytes]) -> None:
        """Apply each line in turn, counting the ones that are not records."""
        jobs, scan, apply, check, fold = self.jobs, _scan_once, _apply, _str, _Fold
        for line in lines:
            if not line or line.isspace():
                continue
            try:
                text = line if isinstance(line, str) else line.decode("utf-8", "surrogateescape")
                obj, end = scan(text, 0)
                if end != len(text):
                    _check_tail(text, end)
                key = check(obj["k"])
                if obj["e"] == "run":
                    self.runs += 1
                    if self.bad is not None:
                        self.torn += 1
                        self.bad = None
                else:
                    st = jobs.get(key)
                    if st is None:
                        st = fold()
                        apply(st, obj)
                        jobs[key] = st
                    else:
                        apply(st, obj)
            # RecursionError: a deeply nested corrupt line must not stop the replay.
            except (ValueError, KeyError, TypeError, AttributeError, StopIteration, RecursionError):
                if self.bad is not None:
                    self.corrupt += 1
                self.bad = line
                continue
            self.records += 1
            if self.bad is not None:
                self.corrupt += 1
                self.bad = None

    def finish(self, *, terminated: bool | None = None) -> Replay:
        """Return the replay; ``terminated`` says whether the input ended with a newline."""
        torn, corrupt, bad = self.torn, self.corrupt, self.bad
        if bad is not None:
            if terminated is None:
                terminated = bad.endswith(b"\n") if isinstance(bad, bytes) else bad.endswith("\n")
            if terminated:
                corrupt += 1
            else:
                torn += 1
        jobs = self.jobs
        for key, st in jobs.items():
            st.freeze(key)  # in place: the mapping now holds the states
        self.jobs = {}
        return Replay(cast(dict[str, JobState], jobs), self.records, self.runs, torn, corrupt)


def replay(lines: Iterable[str | bytes], start: Replay | None = None) -> Replay:
    """Fold journal lines, in order, into one `JobState` per key; never raise.

    ``start`` continues an earlier replay (it is not modified), so replaying chunks in
    turn equals replaying their concatenation when chunks end on line boundaries. An
    unparsable last line without a newline, or one followed by a run header (the journal
    was reopened after a kill), counts as torn; any other bad line as corrupt.
    """
    replayer = _Replayer(start)
    with _gc_paused():
        replayer.feed(lines)
        return replayer.finish()


def load_journal(path: str | os.PathLike[str]) -> Replay:
    """Replay the journal at ``path``; a missing file is an empty replay."""
    replayer = _Replayer(None)
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 (closed below; read in chunks)
    except FileNotFoundError:
        return replayer.finish()
    with handle, _gc_paused():
        carry = b""
        while chunk := handle.read(_READ_CHUNK):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            # Decode whole chunks, not lines: one decode per megabyte is far cheaper.
            replayer.feed(data[:cut].decode("utf-8", "surrogateescape").split("\n"))
        if carry:
            replayer.feed((carry,))
    return replayer.finish(terminated=not carry)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: it rescans every state built so far, again and again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def journal_summary(result: Replay) -> dict[str, Any]:
    """Count jobs by status and list failed keys with their errors (for ``status``)."""
    counts = Counter(state.status for state in result.jobs.values())
    return {
        "jobs": len(result.jobs),
        "by_status": {status.value: counts.get(status, 0) for status in JobStatus},
        "failed": {
            key: {
                "error": state.error,
                "error_class": state.error_class,
                "permanent": state.permanent,
                "attempts": state.attempts,
            }
            for key, state in result.jobs.items()
            if state.status is JobStatus.FAILED
        },
        "records": result.records,
        "torn_lines": result.torn_lines,
        "corrupt_lines": result.corrupt_lines,
    }


def compacted_records(result: Replay) -> Iterator[JournalRecord]:
    """Yield the fewest records whose replay gives ``result.jobs`` again, job by job."""
    yield JournalRecord.run()
    for key, s in result.jobs.items():
        yield from _records_for(key, s)


def _records_for(key: str, s: JobState) -> Iterator[JournalRecord]:
    R = JournalRecord  # noqa: N806 (a short alias keeps each case on one line)
    pid, attempts = s.prediction_id, s.attempts
    if s.status is JobStatus.CREATING:
        since, digest = s.creating_since, s.input_digest or ""
        yield R.creating(key, attempt=attempts, input_digest=digest, ts=since)
    elif pid is not None:
        yield R.created(key, prediction_id=pid, attempt=attempts)
    elif attempts:
        yield R.creating(key, attempt=attempts, input_digest="")  # cleared by what follows
    creating = s.status is JobStatus.CREATING
    if (
        pid is not None
        and not creating
        and (s.status is JobStatus.SUCCEEDED or s.predict_time is not None)
    ):
        yield R.succeeded(key, prediction_id=pid, outputs=s.outputs, predict_time=s.predict_time)
    for output in s.files:
        yield R.file(key, output=output, prediction_id=pid or "")
    if s.status is JobStatus.DONE and pid is not None:
        yield R.done(key, prediction_id=pid, predict_time=s.predict_time)
    elif s.status is JobStatus.FAILED:
        yield R.failed(
            key,
            prediction_id=pid,
            error=s.error or "",
            error_class=s.error_class or "",
            permanent=s.permanent,
            attempt=attempts,
        )
    elif s.status is JobStatus.CANCELED:
        yield R.canceled(key, prediction_id=pid, why=s.error or "")


def compact(path: str | os.PathLike[str]) -> Replay:
    """Rewrite the journal at ``path`` with one minimal record set per job; return its replay.

    The new file is written beside the old one, fsynced and renamed over it, so a crash
    leaves either journal whole. Never run it while a `Journal` has the file open.
    """
    target = Path(path)
    result = load_journal(target)
    tmp = target.with_name(f".{target.name}.compact")
    try:
        with tmp.open("wb") as out:
            batch: list[bytes] = []
            for record in compacted_records(result):
                batch.append(record.to_line())
                if len(batch) >= 4096:
                    out.write(b"".join(batch))
                    batch.clear()
            out.write(b"".join(batch))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
        # Persist the rename itself: fsync the directory entry.
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _storage_error(target, "compact", exc) from exc
    return result


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

    Use ``async with Journal.open(path) as journal:`` (or ``async with Journal(path)``).
    One writer task collects the lines appended within ``flush_interval``, writes them in
    one ``write()`` and, when any of them is durable, fsyncs once. A non-durable record is
    written in the next batch and becomes durable with the next fsync. On exit everything
    pending is written and fsynced, even when the surrounding scope is being cancelled.
    """

    def __init__(self, path: str | os.PathLike[str], *, flush_interval: float = 0.02) -> None:
        self.path = Path(path)
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

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, flush_interval: float = 0.02) -> Self:
        """Return a journal for ``path`` to use as an async context manager."""
        return cls(path, flush_interval=flush_interval)

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
        self._fd = await anyio.to_thread.run_sync(self._open_sync)
        body_error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer)
                await self.append(JournalRecord.run())
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
