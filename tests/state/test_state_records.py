"""Journal records: compact lines, round trips, and no secret ever written."""

from __future__ import annotations

import json

import pytest

from engine._journal import MAX_ERROR_CHARS, JournalEvent, JournalRecord, replay
from engine._journal._records import FIELDS, SHORT
from jobs.model import OutputFile


def test_line_is_compact_json_with_short_names() -> None:
    record = JournalRecord.created("job-1", prediction_id="p1", attempt=2, ts=1.5)
    assert record.to_line() == b'{"k":"job-1","e":"created","ts":1.5,"p":"p1","a":2}\n'


@pytest.mark.parametrize(
    "record",
    [
        JournalRecord.run(manifest="/data/m.yaml", ts=1.0),
        JournalRecord.creating(
            "a", attempt=1, input_digest="ff", content="j0123456789abcdef", ts=1.0
        ),
        JournalRecord.created("a", prediction_id="p", attempt=1, ts=1.0),
        JournalRecord.succeeded("a", prediction_id="p", outputs=["https://x/y.png"], ts=1.0),
        JournalRecord.succeeded("a", prediction_id="p", outputs=None, predict_time=2.5, ts=1.0),
        JournalRecord.file("a", output=OutputFile("a.png", 3, "ab"), prediction_id="p", ts=1.0),
        JournalRecord.done("a", prediction_id="p", predict_time=1.25, ts=1.0),
        JournalRecord.failed(
            "a",
            prediction_id=None,
            error="boom",
            error_class="ModelError",
            permanent=True,
            attempt=3,
            ts=1.0,
        ),
        JournalRecord.canceled("a", prediction_id="p", why="deadline", ts=1.0),
    ],
    ids=lambda r: str(r.event),
)
def test_replay_reads_what_the_writer_writes(record: JournalRecord) -> None:
    # Both sides read the one field table: a written line is a record to the replay, and
    # without any field the replay needs, it is not.
    line = record.to_line()
    obj = json.loads(line)
    assert set(obj) == {"k", "e", "ts", *(SHORT[a] for a in FIELDS[record.event])}
    result = replay([line])
    assert (result.records, result.corrupt_lines) == (1, 0)
    # Added later (older journals lack them): their absence is no corruption.
    optional = {SHORT["predict_time"], SHORT["content"], SHORT["manifest"]} | (
        {SHORT["prediction_id"]} if record.event == "file" else set()
    )
    for short in set(obj) - optional - {"ts"} if record.event != "run" else ():
        cut = {k: v for k, v in obj.items() if k != short}
        assert replay([json.dumps(cut) + "\n"]).corrupt_lines == 1, short


def test_fields_added_later_are_left_out_when_unset() -> None:
    # Implicit-key jobs need no content digest (their key is it): not a byte per line.
    assert b'"jk"' not in JournalRecord.creating("a", attempt=1, input_digest="ff").to_line()
    assert b'"m"' not in JournalRecord.run().to_line()
    state = replay([JournalRecord.creating("a", attempt=1, input_digest="ff").to_line()])
    assert state.jobs["a"].content is None
    lines = [
        JournalRecord.run(manifest="/m.yaml").to_line(),
        JournalRecord.creating("a", attempt=1, input_digest="ff", content="jk1").to_line(),
        JournalRecord.created("a", prediction_id="p", attempt=1).to_line(),
        JournalRecord.done("a", prediction_id="p").to_line(),
    ]
    result = replay(lines)
    assert (result.manifest, result.jobs["a"].content) == ("/m.yaml", "jk1")  # kept when done


def test_timestamp_defaults_to_now_in_milliseconds() -> None:
    ts = JournalRecord.done("a", prediction_id="p").ts
    assert ts == round(ts, 3)
    assert ts > 1_700_000_000


def test_error_message_is_cut() -> None:
    record = JournalRecord.failed(
        "a", prediction_id="p", error="x" * 10_000, error_class="E", permanent=False, attempt=1
    )
    assert record.error is not None
    assert len(record.error) == MAX_ERROR_CHARS


@pytest.mark.parametrize(
    "record",
    [
        JournalRecord.created("r8_abcdef", prediction_id="p", attempt=1),
        JournalRecord.succeeded("a", prediction_id="p", outputs=["https://x", "r8_token"]),
        JournalRecord.canceled("a", prediction_id="r8_0123", why="x"),
    ],
)
def test_refuses_anything_that_looks_like_a_token(record: JournalRecord) -> None:
    with pytest.raises(ValueError, match="token"):
        record.to_line()


@pytest.mark.parametrize(
    "obj",
    [{}, {"k": "a"}, {"k": "a", "e": "nope", "ts": 1}, {"k": 1, "e": "done", "ts": 1}, []],
)
def test_replay_counts_non_records_as_corrupt(obj: object) -> None:
    assert replay([json.dumps(obj) + "\n"]).corrupt_lines == 1


def test_error_messages_are_masked_not_refused() -> None:
    # A model's error text is not ours to refuse: what looks like a credential is masked.
    record = JournalRecord.failed(
        "a",
        prediction_id="p",
        error="401 for header Authorization: Bearer abc and r8_secret",
        error_class="E",
        permanent=True,
        attempt=1,
    )
    line = record.to_line()
    assert b"abc" not in line
    assert b"r8_" not in line
    assert b"Bearer [REDACTED]" in line


def test_every_event_has_a_constructor() -> None:
    assert {e.value for e in JournalEvent} == {
        "run", "creating", "created", "succeeded", "file", "done", "failed", "canceled",
    }  # fmt: skip
