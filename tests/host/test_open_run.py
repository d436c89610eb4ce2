"""`open_run` and `run_jobs` as a host app uses them: the public API against the emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from engine import (
    ApiConfig,
    AuthenticationError,
    ConfigError,
    EngineConfig,
    Job,
    JobEvent,
    JobEventKind,
    ModelRef,
    ReplicateClient,
    Secret,
    open_run,
    run_jobs,
)
from engine.emulator import EmulatorServer
from tests.support import api_config, sha256_of

pytestmark = pytest.mark.anyio

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")


def _jobs(count: int, **input: Any) -> list[Job]:
    return [Job(f"job-{i}", FLUX, {"prompt": f"p{i}", **input}, f"job-{i}") for i in range(count)]


def _config(server: EmulatorServer, out: Path, **changes: Any) -> EngineConfig:
    return EngineConfig(api=api_config(server), output_dir=out, poll_interval=0.01, **changes)


async def test_a_host_that_never_reads_events_cannot_stall_the_run(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    jobs = _jobs(12)
    with capture_logs() as logs:
        async with open_run(jobs, _config(emulator_server, tmp_path), buffer=4) as run:
            summary = await run.wait()  # never reads run.events

    assert summary.done == 12
    assert run.summary is summary
    assert summary.retries == {}
    # Every event the run emitted is either in the full buffer or counted as dropped.
    # CREATING and CREATED per create; DOWNLOADED per file; SUCCEEDED and DONE per job.
    emitted = 2 * summary.predictions_created + summary.files_downloaded + 2 * summary.done
    assert run.events.statistics().current_buffer_used == 4
    assert run.dropped_events == emitted - 4
    warnings = [e for e in logs if e["event"] == "run.events_dropped"]
    assert warnings == [
        {"event": "run.events_dropped", "dropped": emitted - 4, "buffer": 4, "log_level": "warning"}
    ]


async def test_events_off_buffers_nothing(emulator_server: EmulatorServer, tmp_path: Path) -> None:
    with capture_logs() as logs:
        async with open_run(_jobs(5), _config(emulator_server, tmp_path), events=False) as run:
            seen = [event async for event in run.events]
            summary = await run.wait()

    assert seen == []
    assert summary.done == 5
    assert run.dropped_events == 0
    assert not [e for e in logs if e["event"] == "run.events_dropped"]


async def test_events_carry_the_job_and_its_files(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    jobs = _jobs(6, num_outputs=2)
    events: list[JobEvent] = []
    async with open_run(jobs, _config(emulator_server, tmp_path)) as run:
        async for event in run.events:
            events.append(event)
        summary = await run.wait()

    assert summary.done == 6
    assert run.dropped_events == 0
    by_key = {job.key: job for job in jobs}
    for event in events:
        job = by_key[event.key]
        assert event.job is job  # the caller's object, not a copy
        assert event.input is job.input
        assert event.model == FLUX
    done = [e for e in events if e.kind is JobEventKind.DONE]
    assert sorted(e.key for e in done) == sorted(by_key)
    for event in done:
        assert [f.name for f in event.files] == [f"{event.key}_0.png", f"{event.key}_1.png"]
        for file in event.files:
            assert file.sha256 == sha256_of(tmp_path / file.name)
            assert file.size == (tmp_path / file.name).stat().st_size
        assert event.size == sum(f.size for f in event.files)
    assert all(e.files == () for e in events if e.kind is not JobEventKind.DONE)


async def test_skipped_events_carry_the_job_too(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    jobs = _jobs(3)
    config = _config(emulator_server, tmp_path)
    await run_jobs(jobs, config)
    seen: list[JobEvent] = []
    summary = await run_jobs(jobs, config, on_event=seen.append)

    assert summary.skipped_done == 3
    assert [(e.kind, e.job) for e in seen] == [(JobEventKind.SKIPPED, job) for job in jobs]
    assert all(e.job is job for e, job in zip(seen, jobs, strict=True))


async def test_a_missing_token_is_the_same_error_from_both_and_names_real_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EngineConfig(api=ApiConfig(token=None), output_dir=tmp_path)
    with pytest.raises(ConfigError) as from_run_jobs:
        await run_jobs(_jobs(1), config)
    with pytest.raises(ConfigError) as from_open_run:
        async with open_run(_jobs(1), config) as run:
            await run.wait()

    assert str(from_run_jobs.value) == str(from_open_run.value)
    assert "ApiConfig(token=Secret(...))" in str(from_open_run.value)
    assert "api_token" not in str(from_open_run.value)
    # The client names its own parameter.
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.delenv("REPLICATE_API_KEY", raising=False)
    with ReplicateClient() as client, pytest.raises(ConfigError) as from_client:
        await client.run_model_async(str(FLUX), {"prompt": "x"})
    assert "ReplicateClient(api_token=...)" in str(from_client.value)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def test_a_refused_token_is_the_same_error_from_both(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    api = ApiConfig(
        token=Secret("r8_not_the_token"),
        base_url=emulator_server.base_url,
        ca_file=emulator_server.ca_file,
    )
    raised: list[BaseException] = []
    for name in ("run_jobs", "open_run"):
        config = EngineConfig(api=api, output_dir=tmp_path / name)
        try:
            if name == "run_jobs":
                await run_jobs(_jobs(1), config)
            else:
                async with open_run(_jobs(1), config) as run:
                    await run.wait()
        except BaseException as exc:  # compared below
            raised.append(exc)

    first, second = raised
    assert type(first) is type(second)
    assert isinstance(_leaf(first), AuthenticationError)
    assert str(_leaf(first)) == str(_leaf(second))


async def test_an_error_in_the_hosts_block_comes_out_as_raised(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    class HostError(Exception):
        pass

    config = _config(emulator_server, tmp_path)
    handles = []

    async def host() -> None:
        async with open_run(_jobs(4), config) as run:
            handles.append(run)
            async for _event in run.events:
                raise HostError

    with pytest.raises(HostError):
        await host()

    summary = handles[0].summary
    assert summary is not None
    assert summary.interrupted
    # The interrupted run left a journal the next run resumes from.
    summary = await run_jobs(_jobs(4), config)
    assert summary.done == 4
