"""Replay: a pure fold of journal lines into one state per job, that never raises."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine._journal import (
    JobState,
    JournalRecord,
    Replay,
    replay,
)
from engine._status import journal_summary
from jobs.model import JobStatus, OutputFile

R = JournalRecord
PNG = OutputFile("a.png", 10, "aa")


def lines(*records: JournalRecord) -> list[bytes]:
    return [r.to_line() for r in records]


def test_a_job_goes_from_creating_to_done() -> None:
    result = replay(
        lines(
            R.run(),
            R.creating("a", attempt=1, input_digest="d1", ts=5.0),
            R.created("a", prediction_id="p1", attempt=1),
            R.succeeded("a", prediction_id="p1", outputs=["https://x/a.png"], predict_time=2.0),
            R.file("a", output=PNG, prediction_id="p1"),
            R.done("a", prediction_id="p1"),
        )
    )
    assert result.jobs == {
        "a": JobState("a", JobStatus.DONE, "p1", 1, files=(PNG,), predict_time=2.0)
    }
    assert (result.records, result.runs, result.torn_lines, result.corrupt_lines) == (6, 1, 0, 0)


def test_each_step_sets_the_status() -> None:
    records = [
        R.creating("a", attempt=1, input_digest="d1", ts=5.0),
        R.created("a", prediction_id="p1", attempt=1),
        R.succeeded("a", prediction_id="p1", outputs=None),
        R.file("a", output=PNG, prediction_id="p1"),
        R.done("a", prediction_id="p1"),
    ]
    statuses = [replay(lines(*records[: i + 1])).jobs["a"].status for i in range(len(records))]
    assert statuses == ["creating", "running", "succeeded", "succeeded", "done"]


def test_creating_keeps_what_a_crash_needs_to_reconcile() -> None:
    state = replay(lines(R.creating("a", attempt=1, input_digest="d1", ts=5.0))).jobs["a"]
    assert (state.status, state.creating_since, state.input_digest) == ("creating", 5.0, "d1")


def test_a_retried_create_counts_attempts_and_keeps_the_latest_prediction() -> None:
    result = replay(
        lines(
            R.creating("a", attempt=1, input_digest="d", ts=1.0),
            R.creating("a", attempt=2, input_digest="d", ts=2.0),
            R.created("a", prediction_id="p2", attempt=2),
            R.failed(
                "a",
                prediction_id="p2",
                error="oom",
                error_class="ModelError",
                permanent=False,
                attempt=2,
            ),
            R.creating("a", attempt=3, input_digest="d", ts=3.0),
            R.created("a", prediction_id="p3", attempt=3),
        )
    )
    assert result.jobs["a"] == JobState("a", JobStatus.RUNNING, "p3", 3)


def test_failed_keeps_attempts_and_error() -> None:
    state = replay(
        lines(
            R.created("a", prediction_id="p1", attempt=2),
            R.failed(
                "a",
                prediction_id=None,
                error="nsfw",
                error_class="ModelError",
                permanent=True,
                attempt=2,
            ),
        )
    ).jobs["a"]
    assert (state.status, state.prediction_id, state.attempts) == ("failed", "p1", 2)
    assert (state.error, state.error_class, state.permanent) == ("nsfw", "ModelError", True)


def test_canceled_and_redownloaded_files() -> None:
    result = replay(
        lines(
            R.created("a", prediction_id="p", attempt=1),
            R.canceled("a", prediction_id="p", why="deadline"),
            R.succeeded("b", prediction_id="q", outputs=["u1", "u2"]),
            R.file("b", output=OutputFile("b_0.png", 1, "x"), prediction_id="q"),
            R.file("b", output=OutputFile("b_0.png", 2, "y"), prediction_id="q"),
        )
    )
    assert result.jobs["a"].status is JobStatus.CANCELED
    assert result.jobs["a"].error == "deadline"
    assert result.jobs["b"].outputs == ("u1", "u2")
    assert result.jobs["b"].files == (OutputFile("b_0.png", 2, "y"),)


def test_torn_last_line_is_skipped_and_counted() -> None:
    good = lines(R.created("a", prediction_id="p", attempt=1))
    torn = R.done("a", prediction_id="p").to_line()[:17]  # a kill -9 mid-write
    result = replay([*good, torn])
    assert result.torn_lines == 1
    assert result.corrupt_lines == 0
    assert result.jobs["a"].status is JobStatus.RUNNING


def test_corrupt_middle_line_is_skipped_and_counted_apart() -> None:
    result = replay(
        [
            *lines(R.created("a", prediction_id="p", attempt=1)),
            b"\x00\xffnot json\n",
            b'{"k":"a","e":"done"}\n',  # valid JSON, not a valid record
            b'["k"]\n',
            b"[" * 100_000 + b"\n",  # deep enough to blow the JSON decoder's recursion
            *lines(R.done("a", prediction_id="p")),
        ]
    )
    assert (result.corrupt_lines, result.torn_lines, result.records) == (4, 0, 2)
    assert result.jobs["a"].status is JobStatus.DONE


def test_fragment_closed_by_a_reopen_counts_as_torn() -> None:
    fragment = R.done("a", prediction_id="p").to_line()[:10] + b"\n"  # repaired at open
    result = replay(
        [*lines(R.run()), fragment, *lines(R.run(), R.created("a", prediction_id="p", attempt=1))]
    )
    assert (result.torn_lines, result.corrupt_lines, result.runs) == (1, 0, 2)
    assert result.jobs["a"].status is JobStatus.RUNNING


def test_each_state_holds_the_very_key_string_it_is_filed_under() -> None:
    # A run keeps the keys of skipped jobs for its report: it must not keep a copy each.
    result = replay(
        lines(
            R.creating("a", attempt=1, input_digest="d", ts=1.0),
            R.created("a", prediction_id="p", attempt=1),
            R.done("b", prediction_id="q"),
        )
    )
    assert [state.key for state in result.jobs.values()] == ["a", "b"]
    assert all(state.key is key for key, state in result.jobs.items())


def test_replayed_states_are_frozen_job_states() -> None:
    state = replay(lines(R.file("a", output=PNG, prediction_id="p"))).jobs["a"]
    assert type(state) is JobState
    assert state.files == (PNG,)
    with pytest.raises(FrozenInstanceError):
        state.status = JobStatus.DONE  # type: ignore[misc]


def test_str_lines_and_blank_lines() -> None:
    text = "\n".join(line.decode() for line in lines(R.created("a", prediction_id="p", attempt=1)))
    result = replay([text, "", "  \n"])
    assert result.jobs["a"].prediction_id == "p"
    assert result.corrupt_lines == 0


def test_summary_counts_by_status_and_lists_failures() -> None:
    summary = journal_summary(
        replay(
            lines(
                R.done("a", prediction_id="p"),
                R.failed(
                    "b",
                    prediction_id="q",
                    error="bad input",
                    error_class="InvalidRequestError",
                    permanent=True,
                    attempt=1,
                ),
                R.created("c", prediction_id="r", attempt=1),
            )
        )
    )
    assert summary["jobs"] == 3
    assert summary["by_status"]["done"] == 1
    assert summary["by_status"]["running"] == 1
    assert summary["by_status"]["pending"] == 0
    assert summary["failed"] == {
        "b": {
            "error": "bad input", "error_class": "InvalidRequestError", "permanent": True,
            "attempts": 1,
        }
    }  # fmt: skip


# -- properties -----------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "job/ü"])
pids = st.text("abcdef0123456789", min_size=1, max_size=8)
attempts = st.integers(1, 5)
times = st.floats(0, 2e9, allow_nan=False).map(lambda t: round(t, 3))
texts = st.text(max_size=30).filter(lambda s: "r8_" not in s and "Bearer " not in s)

records = st.one_of(
    st.builds(R.run, ts=times),
    st.builds(R.creating, keys, attempt=attempts, input_digest=pids, ts=times),
    st.builds(R.created, keys, prediction_id=pids, attempt=attempts, ts=times),
    st.builds(
        R.succeeded,
        keys,
        prediction_id=pids,
        ts=times,
        outputs=st.none() | st.lists(texts, max_size=3),
        predict_time=st.none() | st.floats(0, 1e4, allow_nan=False),
    ),
    st.builds(
        R.file,
        keys,
        prediction_id=pids,
        ts=times,
        output=st.builds(OutputFile, texts, st.integers(0, 2**40), pids),
    ),
    st.builds(R.done, keys, prediction_id=pids, ts=times),
    st.builds(
        R.failed,
        keys,
        prediction_id=st.none() | pids,
        error=texts,
        error_class=texts,
        permanent=st.booleans(),
        attempt=attempts,
        ts=times,
    ),
    st.builds(R.canceled, keys, prediction_id=st.none() | pids, why=texts, ts=times),
)
journals = st.lists(records, max_size=30).map(lambda rs: [r.to_line() for r in rs])


@given(journals, st.data())
def test_any_byte_prefix_replays_without_raising(journal: list[bytes], data: st.DataObject) -> None:
    blob = b"".join(journal)
    cut = data.draw(st.integers(0, len(blob)))
    result = replay(blob[:cut].splitlines(keepends=True))
    complete = blob[:cut].count(b"\n")
    partial = cut > 0 and not blob[:cut].endswith(b"\n")
    # A cut just before a newline leaves a whole object: it is a record, not torn.
    whole = partial and blob[cut : cut + 1] == b"\n"
    expected = replay(journal[: complete + whole])
    assert result.jobs == expected.jobs
    assert result.torn_lines == int(partial and not whole)
    assert result.corrupt_lines == 0


@given(journals, st.data())
def test_replaying_chunks_in_turn_equals_replaying_all(
    journal: list[bytes], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(journal)), max_size=4)))
    result: Replay | None = None
    for start, end in zip([0, *cuts], [*cuts, len(journal)], strict=True):
        result = replay(journal[start:end], result)
    assert result == replay(journal)


@given(journals, records)
def test_torn_final_line_equals_replay_without_it(journal: list[bytes], last: R) -> None:
    line = last.to_line()
    torn = replay([*journal, line[: len(line) // 2]])
    whole = replay(journal)
    assert torn.jobs == whole.jobs
    assert (torn.torn_lines, torn.records) == (1, whole.records)


def test_created_records_are_counted_over_every_run_and_chunk() -> None:
    first = lines(
        R.run(),
        R.creating("a", attempt=1, input_digest="d1", ts=5.0),
        R.created("a", prediction_id="p1", attempt=1),
        R.failed("a", prediction_id="p1", error="x", error_class="E", permanent=False, attempt=1),
    )
    second = lines(
        R.run(),
        R.creating("a", attempt=2, input_digest="d1", ts=6.0),
        R.created("a", prediction_id="p2", attempt=2),
        R.created("b", prediction_id="p3", attempt=1),
    )

    whole = replay(first + second)
    chunked = replay(second, start=replay(first))

    assert (whole.created, whole.runs) == (3, 2)
    assert (chunked.created, chunked.runs) == (3, 2)
