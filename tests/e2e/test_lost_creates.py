"""A create whose answer was lost is paid once, even when the prediction list lags.

The emulator's ``list_lag`` plays Replicate's list being briefly behind a get; its
``hang_creates`` with ``hang_after_store`` plays a create stored and never answered. The
engine must not send such a create again before the settle window (``--settle``) has
given the list time to show it: not later in the same run, not in the next run after a
``kill -9``, and ``cancel`` must find it by listing rather than only mention it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import ApiConfig, JobEventKind, run_jobs
from engine.emulator import EmulatorConfig
from jobs import read_manifest
from tests.e2e.helpers import FLUX, cli_env, engine_config, image_jobs, journal_records, write_jsonl
from tests.support import api_config

ENGINE = [sys.executable, "-m", "engine"]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # A hung create stays hung for a minute: only our deadlines (or a kill) end it sooner.
    return EmulatorConfig(time_scale=0.01, hang_seconds=60.0)


def _api(server: Any) -> ApiConfig:
    # An attempt is cut after 0.3 s: the create's fate is then unknown.
    return dataclasses.replace(api_config(server), attempt_timeout=0.3)


def _lists(server: Any) -> int:
    requests = server.emulator.stats.snapshot()["requests"]
    return sum(n for k, n in requests.items() if k.startswith("predictions.list "))


def _by_key(journal: Path) -> dict[str, list[str]]:
    events: dict[str, list[str]] = {}
    for record in journal_records(journal):
        events.setdefault(record["k"], []).append(record["e"])
    return events


def _wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.anyio
async def test_a_lagging_list_does_not_make_a_run_pay_twice(emulator_server, tmp_path):
    # Stored, then never answered; the list shows it only a second after it was made.
    # The first look (at the attempt's end) misses it; the settle window waits it out.
    emulator_server.emulator.update(hang_creates=1, hang_after_store=True, list_lag=1.0)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    config = engine_config(emulator_server, tmp_path / "out", settle=3.0, api=_api(emulator_server))
    events = []
    with anyio.fail_after(30):
        summary = await run_jobs(lambda: read_manifest(manifest), config, on_event=events.append)

    stats = emulator_server.emulator.stats.snapshot()
    assert stats["hung_creates"] == 1
    assert stats["duplicates"] == {}
    assert stats["predictions_created"] == 3
    assert (summary.done, summary.predictions_created, summary.creates_unanswered) == (3, 3, 0)
    found = [e for e in events if e.kind is JobEventKind.CREATED and e.detail]
    assert [e.detail for e in found] == ["found by listing"]


@pytest.mark.anyio
async def test_a_create_never_stored_is_sent_again_once_its_window_has_passed(
    emulator_server, tmp_path
):
    # Nothing stored: the list never shows it; after the window the create is sent again.
    emulator_server.emulator.update(hang_creates=1, list_lag=0.5)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    config = engine_config(emulator_server, tmp_path / "out", settle=1.0, api=_api(emulator_server))
    with anyio.fail_after(30):
        summary = await run_jobs(lambda: read_manifest(manifest), config)

    stats = emulator_server.emulator.stats.snapshot()
    assert (stats["predictions_created"], stats["duplicates"]) == (2, {})
    assert summary.done == 2
    records = journal_records(config.journal_path)
    hung = [r for r in records if r["e"] == "creating"]
    first, second = (r for r in hung if [x["k"] for x in hung].count(r["k"]) == 2)
    # Re-sent no sooner than the window after the first send (the journal's own clock).
    assert second["ts"] - first["ts"] >= 1.0


def test_a_kill_while_creates_hang_and_a_lagging_list_pays_each_job_once(emulator_server, tmp_path):
    # The user's report: two creates stored and never answered, the list 3 s behind,
    # kill -9, run again. The re-run must wait for the list, not create blindly.
    emulator_server.emulator.update(hang_creates=2, hang_after_store=True, list_lag=1.0)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    argv = [*ENGINE, "run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.02"]
    journal = tmp_path / "out" / "journal.jsonl"
    proc = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(
            lambda: (
                emulator_server.emulator.stats.snapshot()["hung_creates"] == 2
                and journal.exists()
                and "done" in [e for events in _by_key(journal).values() for e in events]
            ),
            "the creates never hung",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=15)
    assert sum(ev[-1] == "creating" for ev in _by_key(journal).values()) == 2

    resumed = subprocess.run(
        [*argv, "--settle", "3"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert resumed.returncode == 0, resumed.stderr
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["duplicates"] == {}
    assert stats["predictions_created"] == 3
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["predictions_created"], report["reattached"]) == (0, 2)
    assert report["totals"]["predictions_created"] == 3  # every one paid, counted once


def test_ctrl_c_names_the_creates_left_unanswered_and_cancel_finds_them(emulator_server, tmp_path):
    # Two creates stored and never answered, one prediction running (each runs a minute):
    # Ctrl-C, and the grace ends the hung creates' wait.
    emulator_server.emulator.update(
        hang_creates=2,
        hang_after_store=True,
        model_timings={FLUX: {"cold_start": 0.0, "run_time": 6000.0}},  # x time_scale 0.01
    )
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    argv = [*ENGINE, "run", "m.jsonl", "--output-dir", "out", "--shutdown-grace", "0.3"]
    proc = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(
        lambda: (
            emulator_server.emulator.stats.snapshot()["hung_creates"] == 2
            and journal.exists()
            and sum(ev[-1] == "creating" for ev in _by_key(journal).values()) == 2
        ),
        "the creates never hung",
    )
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "1 prediction is still running on Replicate (and billing):" in stderr
    assert "may be running: 2 creates sent without an answer" in stderr
    assert " cancel m.jsonl --output-dir out" in stderr.split("stop them with: ")[1]
    assert "2 (may be billed)" in stdout.split("creates sent, answer lost")[1]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["creates_unanswered"] == 2

    status = subprocess.run(
        [*ENGINE, "status", "m.jsonl", "--output-dir", "out"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "may be running: 2 creates sent without an answer" in status.stdout

    lists_before = _lists(emulator_server)
    dry = subprocess.run(
        [*ENGINE, "cancel", "m.jsonl", "--output-dir", "out", "--dry-run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert "may be running: 2 creates sent without an answer" in dry.stderr
    assert _lists(emulator_server) == lists_before  # --dry-run calls nothing

    canceled = subprocess.run(
        [*ENGINE, "cancel", "m.jsonl", "--output-dir", "out"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.count("found     ") == 2
    assert canceled.stdout.count("canceled  ") == 3
    # The two found by listing are journaled with their ids, then canceled like the third.
    assert {k: ev[-1] for k, ev in _by_key(journal).items() if k} == dict.fromkeys(
        ["p0000", "p0001", "p0002"], "canceled"
    )
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 3
    assert stats["duplicates"] == {}
