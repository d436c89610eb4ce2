"""Completions noticed by sweeping the prediction list, under what a real account shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from engine import JobEventKind, run_jobs
from jobs import read_manifest
from tests.e2e.helpers import FLUX, engine_config, image_jobs, write_jsonl

pytestmark = pytest.mark.anyio


def _sweep_config(server: Any, out: Path, n: int, **changes: Any) -> Any:
    # 6,000 reads/min with polls every 50 ms: per-prediction polls of a few predictions
    # would already be bound by the budget, so the run sweeps the list.
    return engine_config(
        server, out, read_rate=6000.0, poll_interval=0.05, concurrency=n, **changes
    )


def _slow(server: Any, **knobs: Any) -> None:
    """Let flux predictions run ~0.4 s so several sweeps see them running."""
    server.emulator.update(
        model_timings={FLUX: {"cold_start": 0.1, "run_time": 0.3}},
        time_scale=1.0,
        read_rate_per_min=1_000_000,
        read_burst=100_000,
        **knobs,
    )


async def _run(server: Any, tmp_path: Path, n: int, **hooks: Any) -> tuple[Any, dict[str, Any]]:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(n))
    out = tmp_path / "out"
    with capture_logs() as logs:
        summary = await run_jobs(
            lambda: read_manifest(manifest), _sweep_config(server, out, n), **hooks
        )
    sweep = next(e for e in logs if e["event"] == "sweep.summary")
    return summary, sweep


def _requests(server: Any, endpoint: str) -> int:
    stats = server.emulator.stats.snapshot()["requests"]
    return sum(v for k, v in stats.items() if k.startswith(endpoint + " "))


async def test_the_sweep_delivers_completions_without_a_get_each(emulator_server, tmp_path):
    _slow(emulator_server)
    summary, sweep = await _run(emulator_server, tmp_path, 40)
    assert (summary.done, summary.failed) == (40, 0)
    assert sweep["delivered"] > 30  # the list carried status and output
    # Polling 40 predictions every 50 ms for ~0.4 s would cost hundreds of GETs.
    assert _requests(emulator_server, "predictions.get") < 40
    assert _requests(emulator_server, "predictions.list") == sweep["pages"]
    assert len(list((tmp_path / "out").glob("*.png"))) == 40


async def test_predictions_from_the_web_are_never_taken_as_ours(emulator_server, tmp_path):
    _slow(emulator_server)
    created = 0

    def on_event(event: Any) -> None:
        nonlocal created
        if event.kind is JobEventKind.CREATED:
            created += 1
            if created == 1:  # inside the window: newer than our oldest prediction
                emulator_server.emulator.update(foreign_predictions=90)

    summary, sweep = await _run(emulator_server, tmp_path, 30, on_event=on_event)
    assert emulator_server.emulator.stats.foreign_predictions == 90
    assert (summary.done, summary.failed) == (30, 0)
    assert sweep["pages"] > sweep["sweeps"]  # the window held the web predictions too
    outputs = [p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".png"]
    assert sorted(outputs) == [f"p{i:04d}.png" for i in range(30)]  # ours, no one else's


async def test_pages_that_shift_while_paging_are_read_once_per_id(emulator_server, tmp_path):
    # Offset cursors, and 30 web predictions appear after every page: the second page
    # starts with entries the first already had.
    _slow(emulator_server, list_shift=30)
    summary, sweep = await _run(emulator_server, tmp_path, 120)
    assert (summary.done, summary.failed) == (120, 0)
    assert sweep["duplicates"] > 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 120
    assert emulator_server.emulator.stats.snapshot()["duplicates"] == {}


async def test_a_list_behind_a_get_falls_back_to_direct_polls(emulator_server, tmp_path):
    # The list is a minute behind: none of our predictions is in it during the run.
    _slow(emulator_server, list_lag=60.0)
    summary, sweep = await _run(emulator_server, tmp_path, 20)
    assert (summary.done, summary.failed) == (20, 0)
    assert sweep["missing"] >= 20
    assert sweep["delivered"] == 0
    assert _requests(emulator_server, "predictions.get") >= 20


async def test_predictions_older_than_the_window_are_polled_directly(emulator_server, tmp_path):
    # 1,000 web predictions newer than ours fill the window: a sweep of 20 predictions
    # may read 4 pages, so ours lie beyond it.
    _slow(emulator_server)
    created = 0

    def on_event(event: Any) -> None:
        nonlocal created
        if event.kind is JobEventKind.CREATED:
            created += 1
            if created == 20:
                emulator_server.emulator.update(foreign_predictions=1000)

    summary, sweep = await _run(emulator_server, tmp_path, 20, on_event=on_event)
    assert (summary.done, summary.failed) == (20, 0)
    assert sweep["beyond"] > 0
    assert _requests(emulator_server, "predictions.get") > 0


async def test_429s_on_list_calls_are_waited_out(emulator_server, tmp_path):
    # The next three list calls answer 429 (Retry-After: 1), whatever the timing: the
    # sweep yields to the cooldown and its predictions finish by their own polls.
    _slow(emulator_server, throttle_next_lists=3)
    summary, sweep = await _run(emulator_server, tmp_path, 20)
    assert (summary.done, summary.failed) == (20, 0)
    requests = emulator_server.emulator.stats.snapshot()["requests"]
    throttled_lists = requests.get("predictions.list 429", 0)
    assert throttled_lists >= 1
    assert requests.get("predictions.list 200", 0) == sweep["pages"]
    assert summary.throttled_429 == throttled_lists
    assert len(list((tmp_path / "out").glob("*.png"))) == 20


async def test_a_failing_list_hands_predictions_back_to_their_own_polls(emulator_server, tmp_path):
    _slow(emulator_server, list_5xx_rate=1.0)  # every list call answers 503
    summary, sweep = await _run(emulator_server, tmp_path, 20)
    assert (summary.done, summary.failed) == (20, 0)
    assert sweep["pages"] == 0
    assert emulator_server.emulator.stats.snapshot()["requests"]["predictions.list 503"] > 0
    assert _requests(emulator_server, "predictions.get") >= 20
