"""The journal writer: group commit, durability, repair at open, errors and shutdown."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import pytest

from engine._errors import StorageError
from engine._journal import Journal, JournalRecord, load_journal
from jobs.model import JobStatus

pytestmark = pytest.mark.anyio

R = JournalRecord


async def test_durable_append_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "journal.jsonl"
    async with Journal(path, flush_interval=0.001) as journal:
        await journal.append(R.created("a", prediction_id="p1", attempt=1), durable=True)
        # Read back through a separate descriptor while the journal is still open.
        assert b'"p":"p1"' in path.read_bytes()
        assert journal.stats.fsyncs >= 1
    result = load_journal(path)
    assert result.jobs["a"].status is JobStatus.RUNNING
    assert result.runs == 1


async def test_group_commit_batches_concurrent_durable_appends(tmp_path: Path) -> None:
    n = 200
    async with Journal(tmp_path / "j.jsonl", flush_interval=0.005) as journal:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                record = R.created(f"job-{i}", prediction_id=f"p{i}", attempt=1)
                tg.start_soon(partial(journal.append, record, durable=True))
        fsyncs, writes = journal.stats.fsyncs, journal.stats.writes
    assert fsyncs <= 5, f"{n} durable appends took {fsyncs} fsyncs"
    assert writes <= 5
    assert journal.stats.appends == n + 1  # and the run header
    assert len(load_journal(tmp_path / "j.jsonl").jobs) == n


async def test_non_durable_appends_are_written_without_waiting_and_flushed_on_exit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    async with Journal(path, flush_interval=10) as journal:
        with anyio.fail_after(1):  # would hang if append waited for the 10 s batch
            for i in range(50):
                await journal.append(R.done(f"k{i}", prediction_id="p"))
    assert len(load_journal(path).jobs) == 50
    assert journal.stats.fsyncs == 1


async def test_exit_flushes_even_when_the_scope_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with anyio.CancelScope() as scope:
        async with Journal(path, flush_interval=10) as journal:
            await journal.append(R.done("a", prediction_id="p"))
            scope.cancel()
            await anyio.sleep(1)  # cancelled at once
    assert scope.cancelled_caught
    assert load_journal(path).jobs["a"].status is JobStatus.DONE
    assert journal.stats.fsyncs == 1


async def test_reopen_after_a_torn_line_appends_on_a_fresh_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    whole = R.created("a", prediction_id="p1", attempt=1).to_line()
    path.write_bytes(whole + R.done("a", prediction_id="p1").to_line()[:15])
    async with Journal(path, flush_interval=0.001) as journal:
        assert journal.repaired
        await journal.append(R.created("b", prediction_id="p2", attempt=1), durable=True)
    result = load_journal(path)
    assert set(result.jobs) == {"a", "b"}
    assert (result.torn_lines, result.corrupt_lines) == (1, 0)
    assert path.read_bytes().count(b"\n") == 4  # a, repaired fragment, run header, b


async def test_a_clean_file_is_not_repaired(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(R.created("a", prediction_id="p1", attempt=1).to_line())
    async with Journal(path) as journal:
        pass
    assert not journal.repaired
    assert load_journal(path).records == 2


async def test_secrets_are_refused_before_they_are_queued(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    async with Journal(path, flush_interval=0.001) as journal:
        with pytest.raises(ValueError, match="token"):
            await journal.append(R.canceled("a", prediction_id="r8_x", why="x"), durable=True)
    assert b"r8_" not in path.read_bytes()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
async def test_a_full_disk_raises_storage_error_to_waiters_and_at_exit() -> None:
    # /dev/full accepts open() and fails every write with ENOSPC: a real full disk.
    with pytest.raises(StorageError, match="cannot write the journal /dev/full"):  # noqa: PT012
        async with Journal("/dev/full", flush_interval=0.001) as journal:
            with pytest.raises(StorageError, match="No space left"):
                await journal.append(R.done("a", prediction_id="p"), durable=True)
            with pytest.raises(StorageError):
                await journal.append(R.done("b", prediction_id="p"))


async def test_an_error_in_the_body_comes_out_unwrapped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with pytest.raises(KeyError):  # noqa: PT012
        async with Journal(path) as journal:
            await journal.append(R.done("a", prediction_id="p"))
            raise KeyError("boom")
    assert "a" in load_journal(path).jobs


async def test_append_outside_the_context_is_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(RuntimeError, match="not open"):
        await journal.append(R.done("a", prediction_id="p"))


def test_missing_journal_is_an_empty_replay(tmp_path: Path) -> None:
    assert not load_journal(tmp_path / "nope.jsonl").jobs


def test_load_handles_lines_across_read_chunks(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with path.open("wb") as f:
        for i in range(20_000):  # > 1 MiB, so lines straddle chunk boundaries
            f.write(b'{"k":"k%d","e":"created","ts":1.0,"p":"p%d","a":1}\n' % (i, i))
        f.write(b'{"k":"torn","e":"cre')
    result = load_journal(path)
    assert len(result.jobs) == 20_000
    assert (result.torn_lines, result.corrupt_lines) == (1, 0)
    assert path.stat().st_size > 1 << 20
