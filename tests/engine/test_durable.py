"""The one durable write: the old file or the new one, never half of either, no leftovers."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine._durable import GroupCommit, write_durably


def test_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "report.json"
    write_durably(path, b"old")
    write_durably(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_durably(path, b"old")
    with pytest.raises(TypeError):
        write_durably(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.anyio
async def test_group_commit_lands_every_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    commits = GroupCommit()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.json").write_bytes(b"old")  # replaced
    paths = [tmp_path / ("a" if i % 2 else "b") / f"{i}.json" for i in range(40)]
    async with anyio.create_task_group() as tg:
        for i, path in enumerate(paths):
            tg.start_soon(commits.write, path, f"file {i}".encode())
    assert [p.read_bytes() for p in paths] == [f"file {i}".encode() for i in range(40)]
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(p.name for p in paths)


@pytest.mark.anyio
async def test_group_commit_raises_for_the_file_the_disk_refused(tmp_path: Path) -> None:
    commits = GroupCommit()
    (tmp_path / "taken").mkdir()  # a folder where the file should go: rename fails
    with pytest.raises(OSError):
        await commits.write(tmp_path / "taken", b"x")
    await commits.write(tmp_path / "fine.json", b"y")
    assert (tmp_path / "fine.json").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fine.json", "taken"]
