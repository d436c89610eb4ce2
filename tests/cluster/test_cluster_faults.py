"""Faults of a cluster run: workers killed or paused past their lease, Redis killed, 429s.

Every test ends the same way: as many predictions created as jobs (none paid twice), and
every job done with its files verified, from the journal exported out of Redis.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from engine._cluster._keys import account_prefix
from engine._cluster._submit import export_run_journal, run_status, submit_jobs
from engine._cluster._worker import connect
from engine._config import Secret
from engine.emulator import EmulatorConfig, EmulatorServer
from engine.emulator.config import ModelTiming
from jobs import read_manifest
from tests.cluster.helpers import FAST_FLAGS, assert_all_done, events, log_tail, start
from tests.cluster.redis_server import RedisServer
from tests.conftest import FAST_CONFIG
from tests.e2e.helpers import VIDEO, image_jobs, write_jsonl

RUN = "faults"
# Predictions last about 0.3 s: long enough to be caught in flight by a kill or a pause.
SLOW = FAST_CONFIG.replace(time_scale=0.3)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return SLOW


def wait_for(what: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``what`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def submit(redis: RedisServer, tmp_path: Path, jobs: int) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(jobs))
    added = anyio.run(submit_jobs, redis.url, RUN, read_manifest(manifest))
    assert added == jobs


def worker(
    server: EmulatorServer, redis: RedisServer, out: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    args = ["worker", "--redis", redis.url, "--run", RUN, "--output-dir", str(out)]
    return start(server, [*args, "--concurrency", "3", *FAST_FLAGS, *extra], log)


def finish(process: subprocess.Popen[bytes], timeout: float = 90.0) -> int:
    """Wait for a worker; on a failure show the end of its log (pytest prints it)."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = -1
    if code not in (0, 130):
        print(f"--- pid {process.pid} exited {code}:\n{log_tail(process)}")
    return code


def check_outcome(server: EmulatorServer, redis: RedisServer, tmp_path: Path, jobs: int) -> None:
    stats = server.emulator.stats.snapshot()
    assert stats["duplicates"] == {}
    assert stats["predictions_created"] == jobs
    journal = tmp_path / "exported.jsonl"
    assert anyio.run(export_run_journal, redis.url, RUN, journal) == jobs
    assert_all_done(journal, tmp_path / "out", jobs)


def created(server: EmulatorServer) -> int:
    return int(server.emulator.stats.snapshot()["predictions_created"])


@pytest.mark.parametrize("after_creates", [1, 4])
def test_a_killed_workers_jobs_are_claimed_and_resumed(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path, after_creates: int
) -> None:
    submit(redis_server, tmp_path, 8)
    out = tmp_path / "out"
    doomed = worker(emulator_server, redis_server, out, tmp_path / "w1.log")
    wait_for(lambda: created(emulator_server) >= after_creates)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    survivor = worker(emulator_server, redis_server, out, tmp_path / "w2.log")
    assert finish(survivor) == 0
    text = (tmp_path / "w2.log").read_text()
    assert events(text, "job.claimed")  # the dead worker's jobs, after its lease lapsed
    check_outcome(emulator_server, redis_server, tmp_path, 8)


def test_a_worker_killed_while_downloading_is_resumed_without_a_new_prediction(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator_server.emulator.update(
        video_size=16 * 1024 * 1024, model_timings={VIDEO: ModelTiming(0.05, 0.1)}
    )
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": f"v{i}", "model": VIDEO, "input": {"prompt": f"v {i}"}} for i in range(4)],
    )
    assert anyio.run(submit_jobs, redis_server.url, RUN, read_manifest(manifest)) == 4
    out = tmp_path / "out"
    doomed = worker(emulator_server, redis_server, out, tmp_path / "w1.log")
    wait_for(lambda: emulator_server.emulator.stats.bytes_served > 0)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    survivor = worker(emulator_server, redis_server, out, tmp_path / "w2.log")
    assert finish(survivor) == 0
    check_outcome(emulator_server, redis_server, tmp_path, 4)


def test_killed_between_the_creates_answer_and_its_id_is_reconciled(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    # The first create is stored (and billed) but its answer never arrives: the worker
    # dies with the prediction's id known only to Replicate.
    emulator_server.emulator.update(hang_creates=1, hang_after_store=True)
    submit(redis_server, tmp_path, 4)
    out = tmp_path / "out"
    doomed = worker(emulator_server, redis_server, out, tmp_path / "w1.log")
    wait_for(lambda: emulator_server.emulator.stats.hung_creates == 1)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    survivor = worker(emulator_server, redis_server, out, tmp_path / "w2.log")
    assert finish(survivor) == 0
    text = (tmp_path / "w2.log").read_text()
    assert events(text, "job.reconciled")  # found by listing, not created again
    check_outcome(emulator_server, redis_server, tmp_path, 4)


def test_a_worker_paused_past_its_lease_can_neither_write_nor_create(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    submit(redis_server, tmp_path, 8)
    out = tmp_path / "out"
    paused = worker(emulator_server, redis_server, out, tmp_path / "w1.log")
    wait_for(lambda: created(emulator_server) >= 2)
    paused.send_signal(signal.SIGSTOP)
    try:
        other = worker(emulator_server, redis_server, out, tmp_path / "w2.log")
        assert finish(other) == 0  # it claimed the paused worker's jobs and did them all
        before = created(emulator_server)
    finally:
        paused.send_signal(signal.SIGCONT)
    finish(paused)
    assert created(emulator_server) == before  # woken, it created nothing
    fenced = events((tmp_path / "w1.log").read_text(), "job.fenced")
    assert fenced  # its writes were refused
    check_outcome(emulator_server, redis_server, tmp_path, 8)


def test_redis_killed_and_restarted_from_its_aof(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    submit(redis_server, tmp_path, 16)
    out = tmp_path / "out"
    workers = [worker(emulator_server, redis_server, out, tmp_path / f"w{i}.log") for i in range(2)]
    wait_for(lambda: created(emulator_server) >= 4)
    redis_server.kill()
    time.sleep(0.2)  # a short outage: the workers' clients retry meanwhile
    redis_server.start()
    assert [finish(w) for w in workers] == [0, 0]
    check_outcome(emulator_server, redis_server, tmp_path, 16)


def test_a_429_at_one_worker_pauses_all_and_provokes_no_more(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    submit(redis_server, tmp_path, 12)
    out = tmp_path / "out"
    emulator_server.emulator.update(throttle_next_creates=1)
    workers = [worker(emulator_server, redis_server, out, tmp_path / f"w{i}.log") for i in range(3)]
    assert [finish(w) for w in workers] == [0, 0, 0]
    logs = [events((tmp_path / f"w{i}.log").read_text(), "api.throttled") for i in range(3)]
    assert sorted(len(x) for x in logs) == [0, 0, 1]  # one worker saw it
    assert emulator_server.emulator.stats.throttled == 1  # and no worker provoked another

    async def shared_count() -> int:
        redis = connect(redis_server.url)
        key = f"{account_prefix(Secret(emulator_server.token))}:create"
        try:
            return int(await redis.hget(key, "throttled") or 0)  # type: ignore[misc]
        finally:
            await redis.aclose()

    assert anyio.run(shared_count) == 1  # the cooldown every worker waited on
    check_outcome(emulator_server, redis_server, tmp_path, 12)


def test_ctrl_c_on_run_drains_every_worker_and_a_second_run_finishes(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(40))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--redis", redis_server.url, "--run", RUN, "--output-dir",
            str(out), "--workers", "2", "--concurrency", "2", *FAST_FLAGS]  # fmt: skip
    first = start(emulator_server, args, tmp_path / "run1.log")
    wait_for(lambda: created(emulator_server) >= 6)
    first.send_signal(signal.SIGINT)
    assert finish(first) == 130
    text = (tmp_path / "run1.log").read_text()
    drained = created(emulator_server)
    assert drained < 40  # it stopped creating
    # Both processes (the run's and its child worker) finished what they had started.
    finished = events(text, "worker.finished")
    assert len(finished) == 2
    assert sum(e["done"] for e in finished) == drained
    second = start(emulator_server, args, tmp_path / "run2.log")
    assert finish(second) == 0
    check_outcome(emulator_server, redis_server, tmp_path, 40)


def test_a_second_ctrl_c_leaves_predictions_running_for_the_next_run(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    emulator_server.emulator.update(time_scale=3.0)  # predictions of about 3 s
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--redis", redis_server.url, "--run", RUN, "--output-dir",
            str(out), "--workers", "2", "--concurrency", "2", *FAST_FLAGS]  # fmt: skip
    first = start(emulator_server, args, tmp_path / "run1.log")
    wait_for(lambda: created(emulator_server) >= 2)
    first.send_signal(signal.SIGINT)
    time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert finish(first) == 130
    left = created(emulator_server)
    assert left < 6
    status = anyio.run(run_status, redis_server.url, RUN)
    assert status["by_status"].get("running", 0) >= 1  # left running on Replicate, recorded
    emulator_server.emulator.update(time_scale=0.3)
    second = start(emulator_server, args, tmp_path / "run2.log")
    assert finish(second) == 0
    # The predictions left running were re-attached, not paid again.
    check_outcome(emulator_server, redis_server, tmp_path, 6)


def test_an_interrupt_ends_within_the_grace_while_a_create_hangs(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    # The create is read and never answered; its attempt deadline (120 s) is far away:
    # only --shutdown-grace can end the drain, as on one machine.
    emulator_server.emulator.update(hang_creates=1)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--redis", redis_server.url, "--run", RUN, "--output-dir",
            str(out), "--workers", "1", "--concurrency", "3", *FAST_FLAGS]  # fmt: skip
    first = start(emulator_server, [*args, "--shutdown-grace", "0.5"], tmp_path / "run1.log")
    wait_for(lambda: emulator_server.emulator.stats.snapshot()["hung_creates"] == 1)
    first.send_signal(signal.SIGINT)
    assert finish(first, timeout=20) == 130
    text = (tmp_path / "run1.log").read_text()
    assert [e["grace_seconds"] for e in events(text, "run.grace_expired")] == [0.5]
    assert "Traceback" not in text
    second = start(emulator_server, args, tmp_path / "run2.log")
    assert finish(second) == 0
    check_outcome(emulator_server, redis_server, tmp_path, 3)  # the hung create made once
