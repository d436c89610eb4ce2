"""``@file`` inputs: a FIFO, a change or a deletion fails that job, not the run; files
outside the manifest's folder are sent only with --allow-outside-files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine import run_jobs
from jobs import read_manifest
from tests.e2e.helpers import cli_env, engine_config, image_jobs, journal_records, write_jsonl

pytestmark = pytest.mark.anyio

CAPTIONER = "emulator/captioner"
ENGINE = [sys.executable, "-m", "engine"]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def manifest_with_file(folder: Path, reference: str = "@img.png") -> Path:
    (folder / "img.png").write_bytes(PNG)
    jobs = [{"id": "caption", "model": CAPTIONER, "input": {"image": reference}}, *image_jobs(2)]
    return write_jsonl(folder / "m.jsonl", jobs)


async def run_after(tmp_path: Path, server, change, *, allow_outside: bool = False):
    """Read the manifest (the check passes), ``change`` the world, then run it."""
    jobs = list(read_manifest(tmp_path / "m.jsonl", allow_outside_files=allow_outside))
    change()
    with anyio.fail_after(30):  # a FIFO opened for reading would block here forever
        return await run_jobs(jobs, engine_config(server, tmp_path / "out"))


def assert_only_the_file_job_failed(tmp_path: Path, server, summary, words: str) -> None:
    assert (summary.done, summary.failed) == (2, 1)
    assert summary.failed_keys == ["caption"]
    (error, count), *_ = summary.common_errors
    assert count == 1
    assert error.startswith("InputFileError: @file ")
    assert words in error
    assert "\n" not in error
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["failed_keys"] == ["caption"]
    failed = [r for r in journal_records(tmp_path / "out" / "journal.jsonl") if r["e"] == "failed"]
    assert [(r["k"], r["perm"]) for r in failed] == [("caption", True)]
    stats = server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 2  # nothing was sent for the file's job
    assert not any(name.startswith("files.create") for name in stats["requests"])


async def test_a_file_that_became_a_fifo_fails_its_job_only(emulator_server, tmp_path):
    manifest_with_file(tmp_path)

    def to_fifo() -> None:
        (tmp_path / "img.png").unlink()
        os.mkfifo(tmp_path / "img.png")

    summary = await run_after(tmp_path, emulator_server, to_fifo)

    assert_only_the_file_job_failed(tmp_path, emulator_server, summary, "not a regular file")


async def test_a_file_deleted_before_upload_fails_its_job_only(emulator_server, tmp_path):
    manifest_with_file(tmp_path)

    summary = await run_after(tmp_path, emulator_server, (tmp_path / "img.png").unlink)

    assert_only_the_file_job_failed(tmp_path, emulator_server, summary, "is gone")


async def test_a_file_whose_bytes_differ_from_its_size_while_read_fails_its_job(
    emulator_server, tmp_path
):
    # /proc files say size 0 and then read as text: what a file changing mid-read looks
    # like from here (the size before, the bytes read and the size after disagree).
    manifest_with_file(tmp_path, "@status")
    (tmp_path / "status").symlink_to("/proc/self/status")

    summary = await run_after(tmp_path, emulator_server, lambda: None, allow_outside=True)

    assert_only_the_file_job_failed(tmp_path, emulator_server, summary, "changed while being read")


async def test_an_unchanged_file_is_uploaded_once_and_its_job_done(emulator_server, tmp_path):
    manifest_with_file(tmp_path)

    summary = await run_after(tmp_path, emulator_server, lambda: None)

    assert (summary.done, summary.failed) == (3, 0)
    requests = emulator_server.emulator.stats.snapshot()["requests"]
    assert requests.get("files.create 201") == 1


def run_cli(folder: Path, server, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.02", *extra],
        env=cli_env(server),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def outside_manifest(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest_with_file(tmp_path)  # img.png beside, not inside, the manifest's folder
    (tmp_path / "m.jsonl").rename(folder / "m.jsonl")
    lines = (folder / "m.jsonl").read_text().replace('"@img.png"', '"@../img.png"')
    (folder / "m.jsonl").write_text(lines)
    return folder


def test_a_file_outside_the_manifest_folder_is_refused_without_the_flag(emulator_server, tmp_path):
    folder = outside_manifest(tmp_path)

    result = run_cli(folder, emulator_server)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "outside the manifest's folder" in result.stderr
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_a_file_outside_the_manifest_folder_is_sent_with_the_flag(emulator_server, tmp_path):
    folder = outside_manifest(tmp_path)

    result = run_cli(folder, emulator_server, "--allow-outside-files")

    assert result.returncode == 0, result.stderr
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["requests"].get("files.create 201") == 1
    assert stats["predictions_created"] == 3
