"""Fold journal lines into one `JobState` per job: the pure replay, never raising.

`replay` folds lines into one `JobState` per key and never raises on bad input: a torn
last line (kill -9 mid-write) and corrupt lines are skipped and counted. A ``creating``
starts an attempt afresh (only the attempt count carries over); ``file`` adds an output
without changing the status; the other events set the status they are named after. The
short field names come from `engine._journal._records.SHORT`, the format's one table.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from sys import intern
from typing import Any, cast

from engine._journal._records import SHORT, JournalEvent
from jobs.model import JobStatus, OutputFile

__all__ = ["JobState", "Replay", "journal_manifest", "load_journal", "replay"]

_READ_CHUNK = 1 << 20
# The decoder's C scanner, without json.loads' Python wrappers (as costly again per line).
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]

# The short names, read once from the format's table (module constants: the fold is hot).
_K, _E, _TS = SHORT["key"], SHORT["event"], SHORT["ts"]
_A, _IH, _P = SHORT["attempt"], SHORT["input_digest"], SHORT["prediction_id"]
_O, _PT = SHORT["outputs"], SHORT["predict_time"]
_N, _SZ, _SHA = SHORT["name"], SHORT["size"], SHORT["sha256"]
_ERR, _CLS, _PERM, _WHY = SHORT["error"], SHORT["error_class"], SHORT["permanent"], SHORT["why"]
_M, _JK = SHORT["manifest"], SHORT["content"]
_EV = JournalEvent
_RUN, _CREATING, _CREATED = _EV.RUN.value, _EV.CREATING.value, _EV.CREATED.value
_SUCCEEDED, _FILE, _DONE = _EV.SUCCEEDED.value, _EV.FILE.value, _EV.DONE.value
_FAILED, _CANCELED = _EV.FAILED.value, _EV.CANCELED.value


@dataclass(frozen=True, slots=True)
class JobState:
    """The replayed state of the job ``key``; absent from the replay means pending.

    ``key`` is the very string the replay's mapping is keyed by: a run that keeps a key
    (the report lists skipped failed jobs) keeps this one instead of a copy per job.
    ``creating_since``/``input_digest`` are set only while ``status`` is creating, to find
    a prediction whose create was in flight at a crash. ``files`` are the outputs verified
    so far, ``outputs`` the URLs still to fetch (None: re-GET the prediction).
    ``content`` is the ``job_key(model, input)`` the last attempt was created for (jobs
    with an explicit id; None in journals older than the field), kept in every status.
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
    content: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """The result of replaying a journal: the state per key and what was skipped."""

    jobs: Mapping[str, JobState]
    records: int = 0
    runs: int = 0  # how many times the journal was opened
    torn_lines: int = 0  # partial lines left by a kill mid-write
    corrupt_lines: int = 0  # any other line that is not a valid record
    created: int = 0  # ``created`` records: predictions made over every run (all paid)
    manifest: str | None = None  # the manifest the last run header names (None: unsaid)


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
    content: str | None

    def __init__(self) -> None:
        self.status, self.prediction_id, self.attempts = _S.PENDING, None, 0
        self.creating_since, self.input_digest, self.outputs, self.files = None, None, None, ()
        self.error, self.error_class, self.permanent, self.predict_time = None, None, False, None
        self.content = None

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
    e = obj[_E]
    if e == _FILE:
        item = (_str(obj[_N]), _int(obj[_SZ]), _str(obj[_SHA]))
        # A download redone after a crash journals its file again: keep the latest. A
        # tuple, shared empty by default: most jobs of a long journal have no file list
        # to grow, and an empty list per job is 72 bytes times a million.
        st.files = (*[f for f in st.files if f[0] != item[0]], item)
    elif e == _CREATED:
        pid, attempt = _str(obj[_P]), _int(obj[_A])
        if pid != st.prediction_id:
            st.files = ()  # files of an earlier prediction are not this one's outputs
        st.status, st.prediction_id, st.attempts = _S.RUNNING, pid, max(st.attempts, attempt)
        st.creating_since = st.input_digest = st.outputs = st.error = st.error_class = None
        st.permanent, st.predict_time = False, None
    elif e == _CREATING:
        attempt, since, digest = _int(obj[_A]), _num(obj[_TS]), _str(obj[_IH])
        content = obj.get(_JK)
        if content is not None:
            content = _str(content)
        # A new attempt starts clean: only the attempt count carries over.
        st.status, st.prediction_id, st.attempts = _S.CREATING, None, attempt
        st.content = content
        st.creating_since, st.input_digest, st.outputs, st.files = since, digest, None, ()
        st.error = st.error_class = st.predict_time = None
        st.permanent = False
    elif e == _SUCCEEDED:
        pid, urls, pt = _str(obj[_P]), obj[_O], _opt_num(obj.get(_PT))
        if urls is not None:
            urls = tuple([_str(u) for u in urls])
        st.status, st.prediction_id, st.outputs, st.predict_time = _S.SUCCEEDED, pid, urls, pt
        st.creating_since = st.input_digest = st.error = st.error_class = None
        st.permanent = False
    elif e == _DONE:
        pid, pt = _str(obj[_P]), _opt_num(obj.get(_PT))
        st.status, st.prediction_id = _S.DONE, pid
        st.creating_since = st.input_digest = st.outputs = st.error = st.error_class = None
        st.permanent = False
        if pt is not None:
            st.predict_time = pt
    elif e == _FAILED:
        pid, attempt = obj[_P], _int(obj[_A])
        # Failed jobs of one batch mostly share their messages: keep one copy of each.
        err, cls, perm = intern(_str(obj[_ERR])), intern(_str(obj[_CLS])), obj[_PERM] is True
        if pid is not None:
            st.prediction_id = _str(pid)
        st.status, st.attempts = _S.FAILED, max(st.attempts, attempt)
        st.creating_since = st.input_digest = st.outputs = None
        st.error, st.error_class, st.permanent = err, cls, perm
    elif e == _CANCELED:
        pid, why = obj[_P], intern(_str(obj[_WHY]))
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
        self.records = self.runs = self.torn = self.corrupt = self.created = 0
        self.manifest: str | None = None
        if start is not None:
            self.manifest = start.manifest
            self.jobs = {key: _Fold.thaw(state) for key, state in start.jobs.items()}
            self.records, self.runs, self.created = start.records, start.runs, start.created
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
                key = check(obj[_K])
                event = obj[_E]
                if event == _RUN:
                    self.runs += 1
                    manifest = obj.get(_M)
                    if isinstance(manifest, str):
                        self.manifest = manifest
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
                    if event == _CREATED:
                        self.created += 1
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
        states = cast(dict[str, JobState], jobs)
        return Replay(
            states,
            self.records,
            self.runs,
            torn,
            corrupt,
            created=self.created,
            manifest=self.manifest,
        )


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


def journal_manifest(path: Path) -> str | None:
    """Return the manifest a journal was first written for (its first run header's path).

    Reads the first line only, so a journal of a million lines costs nothing to ask. None
    when there is no journal, or its header names no manifest (journals written before
    the run header carried one).
    """
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 16)
    except OSError:
        return None  # missing, or not a file: the run's own path checks say which
    try:
        obj = json.loads(first)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get(_E) != _RUN:
        return None
    manifest = obj.get(_M)
    return manifest if isinstance(manifest, str) else None
