"""A run never splices a part of old bytes onto new ones, nor writes through a symlink."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import stamina

from engine import run_jobs
from engine._http import ssl_context
from jobs import read_manifest
from tests.e2e.helpers import (
    FLUX,
    VIDEO,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)
from tests.support import sha256_of

pytestmark = pytest.mark.anyio


async def test_a_part_left_by_a_cut_run_is_not_spliced_onto_changed_bytes(
    emulator_server, tmp_path
):
    emulator = emulator_server.emulator
    emulator.update(video_size=2 * 1024 * 1024, cut_first_downloads=1_000)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1, model=VIDEO, prefix="v"))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, call_attempts=1)
    with stamina.set_testing(True, attempts=1):
        first = await run_jobs(lambda: read_manifest(manifest), config)
    assert first.done == 0
    assert (out / "v0000.mp4.part").stat().st_size > 0  # the cut left a part
    emulator.update(cut_first_downloads=0, output_salt="re-created")  # other bytes now

    second = await run_jobs(lambda: read_manifest(manifest), config)

    assert (second.done, second.predictions_created, second.exit_code) == (1, 0, 0)
    [file] = [r for r in journal_records(out / "journal.jsonl") if r["e"] == "file"]
    auth = {"Authorization": f"Bearer {emulator_server.token}"}
    verify = ssl_context(emulator_server.ca_file)
    async with httpx.AsyncClient(verify=verify, headers=auth) as http:
        answer = await http.get(f"{emulator_server.base_url}/v1/predictions/{file['p']}")
        fresh = await http.get(answer.json()["output"])  # the emulator's bytes, now
    assert sha256_of(out / "v0000.mp4") == file["sha"]
    assert (fresh.status_code, len(fresh.content)) == (200, 2 * 1024 * 1024)
    assert file["sha"] == hashlib.sha256(fresh.content).hexdigest()
    assert emulator.stats.snapshot()["predictions_created"] == 1


async def test_an_output_replaced_by_a_symlink_is_refused_not_followed(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    assert (await run_jobs(lambda: read_manifest(manifest), config)).done == 1
    [image] = (p for p in out.glob("p0000.*") if not p.name.endswith(".info.json"))
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"x" * (image.stat().st_size + 1))  # not even the recorded size
    image.unlink()
    image.symlink_to(victim)

    again = await run_jobs(lambda: read_manifest(manifest), config)

    assert again.exit_code == 1
    assert again.failed_keys == ["p0000"]
    assert "symlink" in str(again.common_errors)
    assert victim.read_bytes() == b"x" * (victim.stat().st_size)
    assert image.is_symlink()


async def test_an_output_folder_that_is_a_symlink_is_refused(emulator_server, tmp_path):
    jobs = [
        {"id": "a", "model": FLUX, "input": {"prompt": "a"}, "output": "sub/a"},
        {"id": "b", "model": FLUX, "input": {"prompt": "b"}},
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)

    summary = await run_jobs(lambda: read_manifest(manifest), engine_config(emulator_server, out))

    assert (summary.done, summary.failed_keys) == (1, ["a"])
    assert "symlink" in str(summary.common_errors)
    assert list(elsewhere.iterdir()) == []
