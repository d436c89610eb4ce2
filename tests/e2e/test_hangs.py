"""Nothing hangs: servers that never finish TLS, never answer, or stall mid-body.

Each case ends in bounded time (set short with ``attempt_timeout``), the job deferred or
failed by its class, the rest of the batch going on. The emulator plays a create that is
never answered; a scripted TLS server (tests/support.py) plays what the emulator cannot.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina

from engine import ApiConfig, EngineConfig, JobEvent, JobEventKind, Secret, open_run, run_jobs
from engine._display import Progress, waiting_text
from engine.emulator import EmulatorConfig
from jobs import read_manifest
from tests.e2e.helpers import (
    FLUX,
    cli_env,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)
from tests.support import silent_server, tls_server

ENGINE = [sys.executable, "-m", "engine"]
TOKEN = "r8_hostile0000000000000000000000000000000"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # A hung create stays hung for a minute: only our deadline can end it sooner.
    return EmulatorConfig(time_scale=0.01, hang_seconds=60.0)


@pytest.fixture
def fast_retries() -> Iterator[None]:
    # Two attempts per call, no backoff waits: the deadlines are what is under test.
    with stamina.set_testing(True, attempts=2):
        yield


# Short polls; a create whose answer was lost is believed absent after half a second (the
# emulator's list has no lag in these tests).
FAST = ("--poll-interval", "0.02", "--settle", "0.5")


def run_cli(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", *FAST, *extra],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("stored", [False, True], ids=["lost", "stored-then-lost"])
def test_a_create_never_answered_is_cut_and_paid_once(emulator_server, tmp_path, stored):
    # The first create is read and never answered; when `stored`, the server kept it first.
    emulator_server.emulator.update(hang_creates=1, hang_after_store=stored)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))

    result = run_cli(tmp_path, cli_env(emulator_server), "--attempt-timeout", "0.5")

    assert result.returncode == 0, result.stderr
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["hung_creates"] == 1
    assert stats["predictions_created"] == 3  # the hung one found by listing, or made anew
    assert stats["duplicates"] == {}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["done"] == 3
    # Found by listing is this run's own create (paid once), not a re-attach.
    assert report["predictions_created"] == 3
    assert report["reattached"] == 0


def test_the_attempt_timeout_is_read_from_the_settings_file(emulator_server, tmp_path):
    # Without it the hung create would hold the run for a minute (the subprocess timeout).
    emulator_server.emulator.update(hang_creates=1)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    (tmp_path / "settings.yaml").write_text("attempt-timeout: 0.5\nsettle: 0.5\n")

    result = run_cli(tmp_path, cli_env(emulator_server), "--config", "settings.yaml")

    assert result.returncode == 0, result.stderr
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["hung_creates"] == 1
    assert stats["duplicates"] == {}


def api_for(url: str, tmp_path: Path, **changes: Any) -> ApiConfig:
    return ApiConfig(token=Secret(TOKEN), base_url=url, ca_file=tmp_path / "ca.pem", **changes)


def config_for(api: ApiConfig, out: Path, **changes: Any) -> EngineConfig:
    settings: dict[str, Any] = {
        "api": api,
        "output_dir": out,
        "poll_interval": 0.01,
        "journal_flush_interval": 0.002,
        "call_attempts": 2,
        "settle": 0.2,  # no list to lag here: an absent create is believed soon
    }
    settings.update(changes)
    return EngineConfig(**settings)


@pytest.mark.anyio
async def test_a_server_that_never_completes_tls_defers_every_job(tmp_path, fast_retries):
    events: list[JobEvent] = []
    jobs = list(read_manifest(write_jsonl(tmp_path / "m.jsonl", image_jobs(3))))
    with silent_server() as url:
        api = ApiConfig(token=Secret(TOKEN), base_url=url, attempt_timeout=0.2)
        with anyio.fail_after(30):
            summary = await run_jobs(
                jobs, config_for(api, tmp_path / "out", concurrency=2), on_event=events.append
            )

    assert summary.deferred == 3
    assert summary.predictions_created == 0
    # Known unsent (no request headers left): retried as a create may be, never looked for.
    deferred = [e.detail for e in events if e.kind is JobEventKind.DEFERRED]
    assert len(deferred) == 3
    assert all("ConnectTimeout" in d and "not connected" in d for d in deferred), deferred
    records = journal_records(tmp_path / "out" / "journal.jsonl")
    assert {r["k"] for r in records if r["e"] == "creating"} == {"p0000", "p0001", "p0002"}
    assert not any(r["e"] == "failed" for r in records)  # the next run tries them again


def prediction(pid: str, url: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": pid,
        "model": FLUX,
        "version": "v1",
        "status": status,
        "input": {},
        "output": [f"{url}/{pid}.png"],
        "logs": "",
        "error": None,
        "metrics": {"predict_time": 0.1},
        "created_at": "2026-01-01T00:00:00Z",
        "urls": {"get": f"{url}/v1/predictions/{pid}", "cancel": f"{url}/v1/cancel/{pid}"},
        **extra,
    }


def json_answer(status: str, body: Any) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


@pytest.mark.anyio
@pytest.mark.parametrize("sent", [10, 0], ids=["stalls-mid-body", "never-sends-a-byte"])
async def test_a_download_that_stalls_defers_its_job_only(tmp_path, fast_retries, sent):
    release = threading.Event()
    url_box: list[str] = []
    body = b"x" * 1000

    def answer(line: str, headers: dict[str, str]) -> Iterator[bytes]:
        method, path, _ = line.split(" ")
        if method == "POST":
            # The prompt names the prediction: "stall" gets the file that stalls.
            pid = "stall" if creates.pop(0) == 0 else f"ok{len(creates)}"
            yield json_answer("201 Created", prediction(pid, url_box[0]))
        elif path.startswith("/stall"):
            head = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
            if sent:
                yield head.encode() + body[:sent]
            release.wait(30)  # then silence: after the headers and a few bytes, or at once
        elif path.startswith("/ok"):
            yield b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + body
        else:
            yield json_answer("404 Not Found", {"detail": "not here"})

    creates = [0, 1, 2]
    jobs = list(read_manifest(write_jsonl(tmp_path / "m.jsonl", image_jobs(3))))
    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        url_box.append(url)
        api = api_for(url, tmp_path, attempt_timeout=0.3)
        try:
            with anyio.fail_after(30):
                summary = await run_jobs(jobs, config_for(api, tmp_path / "out", concurrency=1))
        finally:
            release.set()

    assert summary.done == 2
    assert summary.deferred == 1
    records = journal_records(tmp_path / "out" / "journal.jsonl")
    stalled = [r for r in records if r.get("p") == "stall"]
    assert stalled[-1]["e"] == "succeeded"  # paid, kept for the next run to download
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["p0001.png", "p0002.png"]


@pytest.mark.anyio
async def test_an_api_that_never_sends_a_byte_defers_the_job(tmp_path, fast_retries):
    release = threading.Event()

    def answer(_line: str, _headers: dict[str, str]) -> Iterator[bytes]:
        release.wait(30)  # TLS done, request read, then silence
        yield b""

    jobs = list(read_manifest(write_jsonl(tmp_path / "m.jsonl", image_jobs(2))))
    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        api = api_for(url, tmp_path, attempt_timeout=0.2)
        try:
            with anyio.fail_after(30):
                summary = await run_jobs(jobs, config_for(api, tmp_path / "out", concurrency=2))
        finally:
            release.set()

    # Each create may have been stored (sent, no answer): looked for, then left for the
    # next run to look again (its "creating" record says so), never paid twice blindly.
    assert summary.deferred == 2
    records = journal_records(tmp_path / "out" / "journal.jsonl")
    assert [r["e"] for r in records if r["k"] == "p0000"] == ["creating"]


@pytest.mark.anyio
async def test_the_progress_shows_what_is_waiting_and_an_interrupt_ends_in_grace(
    emulator_server, tmp_path
):
    emulator_server.emulator.update(hang_creates=2)
    jobs = list(read_manifest(write_jsonl(tmp_path / "m.jsonl", image_jobs(2))))
    config = engine_config(emulator_server, tmp_path / "out", shutdown_grace=0.1)
    progress = Progress(2, config.create_rate, live=False)
    seen: list[str] = []
    with anyio.fail_after(30):
        async with open_run(jobs, config) as run:
            async for event in run.events:
                progress.record(event)
                seen.append(event.kind)
                numbers = progress.snapshot()
                if numbers["waiting_creates"] == 2 and not run.control.interrupted:
                    assert waiting_text(numbers).startswith("2 creates (oldest ")
                    run.control.interrupt("test")
    assert run.summary is not None
    assert run.summary.interrupted
    assert JobEventKind.CREATING in seen
    assert emulator_server.emulator.stats.snapshot()["hung_creates"] == 2
    records = journal_records(tmp_path / "out" / "journal.jsonl")
    assert sorted(r["k"] for r in records if r["e"] == "creating") == ["p0000", "p0001"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_first_signal_ends_the_run_within_its_grace_while_a_create_hangs(
    emulator_server, tmp_path, signum
):
    emulator_server.emulator.update(hang_creates=1)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    # The grace as a flag, or as its environment variable (a run setting like the others).
    grace = ["--shutdown-grace", "0.5"] if signum == signal.SIGINT else []
    # The attempt deadline (120 s by default) is far away: only the grace can end it.
    proc = subprocess.Popen(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", *grace],
        env=env if grace else env | {"REPLICATE_BATCH_SHUTDOWN_GRACE": "0.5"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (
        emulator_server.emulator.stats.snapshot()["hung_creates"] == 1
        and journal.exists()
        and any(r["e"] == "done" for r in journal_records(journal))
    ):
        assert time.monotonic() < deadline, "the create never hung"
        time.sleep(0.01)

    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=15)  # the bound: 0.5 s of grace, then cleanup

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    by_key: dict[str, list[str]] = {}
    for record in journal_records(journal):
        by_key.setdefault(record["k"], []).append(record["e"])
    hung = next(k for k, events in by_key.items() if k and "done" not in events)
    assert by_key[hung][-1] == "creating"  # what it knew: sent, answer never seen
    assert json.loads((tmp_path / "out" / "report.json").read_text())["interrupted"] is True

    resumed = run_cli(tmp_path, env)

    assert resumed.returncode == 0, resumed.stderr
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 2  # the hung create was looked for, then made once
    assert stats["duplicates"] == {}
