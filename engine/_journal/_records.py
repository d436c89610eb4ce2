"""The journal's record format: one table of field names, and `JournalRecord` to write.

A journal is one compact JSON object per line, ``{"k": key, "e": event, "ts": unix, ...}``.
`FIELDS` below is the only place the short names are spelled: the writer (`to_obj`) and
the replay (`engine._journal._replay`) both read it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Self

from engine._redact import looks_secret, redact
from jobs.model import OutputFile

__all__ = ["FIELDS", "FORMAT_VERSION", "MAX_ERROR_CHARS", "SHORT", "JournalEvent", "JournalRecord"]

FORMAT_VERSION = 1
MAX_ERROR_CHARS = 500


class JournalEvent(StrEnum):
    """Name one kind of journal record (the ``e`` field)."""

    RUN = "run"  # written each time the journal opens (key "")
    CREATING = "creating"  # just before a create request is sent
    CREATED = "created"  # the API accepted the create
    SUCCEEDED = "succeeded"  # the prediction succeeded; outputs still to fetch
    FILE = "file"  # one output verified and renamed into place
    DONE = "done"  # every output of the job is on disk
    FAILED = "failed"  # an attempt failed (permanent or not)
    CANCELED = "canceled"  # canceled by us or on Replicate


# The one table of the format: each record attribute and its short name on disk.
SHORT: Final[dict[str, str]] = {
    "key": "k",
    "event": "e",
    "ts": "ts",  # unix time, milliseconds
    "version": "v",  # format version
    "attempt": "a",  # attempt number (new predictions for the job)
    "input_digest": "ih",  # reconciles a crash mid-create
    "prediction_id": "p",
    "outputs": "o",  # output URLs; null when the output holds data: URIs or text
    "predict_time": "pt",
    "name": "n",  # output file name relative to the output folder
    "size": "sz",
    "sha256": "sha",
    "error": "err",
    "error_class": "cls",
    "permanent": "perm",
    "why": "why",  # why a job was canceled
    "manifest": "m",  # run header: the manifest's resolved path (absent in older journals)
    "content": "jk",  # creating, explicit ids only: job_key(model, input) (absent before)
}
# Written only when set: an absent field reads as None, and old journals lack them anyway.
_OPTIONAL: Final[frozenset[str]] = frozenset({"manifest", "content"})

# Which attributes each event carries (besides key, event, ts), in the order written.
FIELDS: Final[dict[JournalEvent, tuple[str, ...]]] = {
    JournalEvent.RUN: ("version", "manifest"),
    JournalEvent.CREATING: ("attempt", "input_digest", "content"),
    JournalEvent.CREATED: ("prediction_id", "attempt"),
    JournalEvent.SUCCEEDED: ("prediction_id", "outputs", "predict_time"),
    JournalEvent.FILE: ("name", "size", "sha256", "prediction_id"),
    JournalEvent.DONE: ("prediction_id", "predict_time"),
    JournalEvent.FAILED: ("prediction_id", "error", "error_class", "permanent", "attempt"),
    JournalEvent.CANCELED: ("prediction_id", "why"),
}
_K, _E, _TS = SHORT["key"], SHORT["event"], SHORT["ts"]
_WRITTEN = {event: tuple((a, SHORT[a]) for a in attrs) for event, attrs in FIELDS.items()}


def _now() -> float:
    return round(time.time(), 3)


def _ts(ts: float | None) -> float:
    return _now() if ts is None else ts


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
    manifest: str | None = None
    content: str | None = None

    @classmethod
    def run(cls, *, manifest: str | None = None, ts: float | None = None) -> Self:
        """Return the header written each time a journal is opened (``manifest``: its path)."""
        return cls("", JournalEvent.RUN, _ts(ts), version=FORMAT_VERSION, manifest=manifest)

    @classmethod
    def creating(
        cls,
        key: str,
        *,
        attempt: int,
        input_digest: str,
        content: str | None = None,
        ts: float | None = None,
    ) -> Self:
        """Return the record written just before a create request is sent.

        ``content`` is what the job asks for, ``job_key(model, input)``: written for jobs
        with an explicit id, whose key does not change when their model or input does.
        """
        return cls(
            key,
            JournalEvent.CREATING,
            _ts(ts),
            attempt=attempt,
            input_digest=input_digest,
            content=content,
        )

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
            error=redact(error)[:MAX_ERROR_CHARS],
            error_class=error_class,
            permanent=permanent,
        )

    @classmethod
    def canceled(
        cls, key: str, *, prediction_id: str | None, why: str, ts: float | None = None
    ) -> Self:
        """Return the record of a job canceled by us or on Replicate."""
        return cls(
            key, JournalEvent.CANCELED, _ts(ts), prediction_id=prediction_id, why=redact(why)
        )

    def to_obj(self) -> dict[str, Any]:
        """Return the JSON object written for this record, with short field names."""
        obj: dict[str, Any] = {_K: self.key, _E: self.event.value, _TS: self.ts}
        for attr, short in _WRITTEN[self.event]:
            value = getattr(self, attr)
            if value is None and attr in _OPTIONAL:
                continue
            obj[short] = list(value) if isinstance(value, tuple) else value
        return obj

    def to_line(self) -> bytes:
        """Return the record as one compact JSON line, newline included.

        Raise ValueError when any value looks like an API token.
        """
        obj = self.to_obj()
        for value in obj.values():
            texts = [value] if isinstance(value, str) else value if isinstance(value, list) else ()
            for text in texts:
                if isinstance(text, str) and looks_secret(text):
                    raise ValueError("refusing to journal a value that looks like an API token")
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
