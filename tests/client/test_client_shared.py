"""One client, one set of parts; lost create answers; streams that drop; deployments.

Against the HTTPS emulator with the real replicate client inside; assertions are on the
emulator's counters (creates, 429s, TLS handshakes, stream requests) and on what the
caller receives.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import stamina

from engine import (
    PredictionMayExistError,
    PredictionTimeoutError,
    ReplicateClient,
    TransportError,
    reset_replicate_client,
)
from engine.emulator import EmulatorConfig, EmulatorServer
from jobs import input_digest
from tests.client import gathered

FLUX = gathered.FLUX
LLAMA = "meta/meta-llama-3-70b-instruct"
SCALE = 10.0  # 6000 creates/min: the 200 creates take about two seconds


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPLICATE_MAX_RETRIES", raising=False)
    monkeypatch.delenv("REPLICATE_TIMEOUT", raising=False)
    reset_replicate_client()
    _BEFORE.clear()
    _BEFORE.update(t for t in threading.enumerate() if t.name == "replicate-client")
    with stamina.set_testing(True, attempts=10, cap=True):
        yield
    reset_replicate_client()


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Creates allowed at 6000/min with a burst of 20: far below 200 asked at once."""
    return gathered.emulator_config(SCALE)


def stats(server: EmulatorServer) -> dict[str, Any]:
    return dict(server.emulator.stats.snapshot())


def requests(server: EmulatorServer, endpoint: str) -> int:
    """Return how many requests ``endpoint`` answered, whatever the status."""
    return sum(n for k, n in stats(server)["requests"].items() if k.split(" ")[0] == endpoint)


_BEFORE: set[threading.Thread] = set()


def loop_threads() -> list[threading.Thread]:
    """Return the client loop threads started during this test."""
    return [t for t in threading.enumerate() if t.name == "replicate-client" and t not in _BEFORE]


# -- one set of parts ------------------------------------------------------------------


def test_gathered_200_share_one_budget_and_one_pool(replicate_env: EmulatorServer) -> None:
    client = gathered.make_client(SCALE)

    result = gathered.measure(replicate_env, client, 200)

    assert result["succeeded"] == 200, result
    assert result["predictions_created"] == 200
    assert result["create_429s"] == 0
    # The proof of pacing is the emulator's own create limiter, set below the demand,
    # answering no 429 (above). Arrival times at the server jitter with the machine's load,
    # so one-second peaks only show the demand (200 at once) never went out as a burst.
    assert result["peak_creates_per_1s"] <= 150, result
    # One pool: at most its 100 connections, reused (one handshake per call before).
    assert result["tls_handshakes"] <= 100, result
    assert len(loop_threads()) == 1
    client.close()
    assert loop_threads() == []


def test_threads_share_the_budget_and_the_pool(replicate_env: EmulatorServer) -> None:
    client = gathered.make_client(SCALE)

    client.run_model(FLUX, {"prompt": "warm"}, use_file_output=False)
    for i in range(5):  # one after another, each from its own thread: one connection
        thread = threading.Thread(target=client.run_model, args=(FLUX, {"prompt": f"s{i}"}))
        thread.start()
        thread.join()
    assert stats(replicate_env)["tls_handshakes"] == 1

    with ThreadPoolExecutor(60) as pool:  # 60 at once against a burst of 20
        outputs = list(pool.map(lambda i: client.run_model(FLUX, {"prompt": f"t{i}"}), range(60)))

    assert all(outputs)
    s = stats(replicate_env)
    assert s["predictions_created"] == 66
    assert s["throttled"] == 0
    client.close()


def test_close_with_and_async_with_release_the_loop(replicate_env: EmulatorServer) -> None:
    with ReplicateClient(poll_interval=0.02) as client:
        assert client.run_model(FLUX, {"prompt": "a"}, use_file_output=False)
        assert len(loop_threads()) == 1
    assert loop_threads() == []

    async def host() -> Any:
        async with ReplicateClient(poll_interval=0.02) as aclient:
            return await aclient.run_model_async(FLUX, {"prompt": "b"}, use_file_output=False)

    assert asyncio.run(host())
    assert loop_threads() == []

    # A closed client starts fresh parts when used again.
    assert client.run_model(FLUX, {"prompt": "c"}, use_file_output=False)
    client.close()
    assert loop_threads() == []


def test_reset_closes_the_old_singleton(replicate_env: EmulatorServer) -> None:
    from engine import get_replicate_client  # noqa: PLC0415

    get_replicate_client().run_model(FLUX, {"prompt": "a"}, use_file_output=False)
    assert len(loop_threads()) == 1

    reset_replicate_client()

    assert loop_threads() == []


def test_singleton_closes_cleanly_at_interpreter_exit(replicate_env: EmulatorServer) -> None:
    script = (
        "import structlog\n"
        "structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))\n"
        "from engine import get_replicate_client\n"
        "out = get_replicate_client().run_model("
        "'black-forest-labs/flux-schnell', {'prompt': 'x'}, use_file_output=False)\n"
        "print('output', len(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,  # a loop thread joined before atexit would hang here
        check=False,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "output 1" in lines
    # Closed by the exit hook, after the script's last line.
    assert "client.closed" in lines[-1]
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr


def test_cancelling_the_caller_cancels_the_call(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(time_scale=1.0)  # the video runs for seconds
    client = ReplicateClient(poll_interval=0.02)

    async def host() -> None:
        task = asyncio.create_task(client.run_model_async("kling-ai/kling-video", {"prompt": "v"}))
        while stats(replicate_env)["predictions_created"] == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(host())
    polls = requests(replicate_env, "predictions.get")
    time.sleep(0.1)  # five poll intervals: a call still running would poll again

    assert requests(replicate_env, "predictions.get") == polls
    assert client.run_model(FLUX, {"prompt": "after"}, use_file_output=False)
    client.close()


# -- a create whose answer was lost ----------------------------------------------------


def test_5xx_after_store_finds_the_prediction(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(create_5xx_first=1, create_5xx_after_store=True)
    client = ReplicateClient(poll_interval=0.02)

    output = client.run_model(FLUX, {"prompt": "orphan"}, use_file_output=False)

    assert output
    s = stats(replicate_env)
    assert s["predictions_created"] == 1  # paid once
    assert requests(replicate_env, "models.predictions.create") == 1
    assert s["requests"]["predictions.list 200"] == 1
    client.close()


def test_lost_create_is_not_mistaken_for_an_earlier_same_input(
    replicate_env: EmulatorServer,
) -> None:
    client = ReplicateClient(poll_interval=0.02)
    client.run_model(FLUX, {"prompt": "same"}, use_file_output=False)
    replicate_env.emulator.update(create_5xx_first=1)  # answered 5xx, not stored

    client.run_model(FLUX, {"prompt": "same"}, use_file_output=False)

    # The earlier prediction of the same input was not taken for the lost one.
    assert stats(replicate_env)["predictions_created"] == 2
    assert requests(replicate_env, "models.predictions.create") == 3
    client.close()


def test_create_that_cannot_be_known_says_it_may_exist(replicate_env: EmulatorServer) -> None:
    # 500: replicate's transport does not retry it (a 503 list waits ~50 s per call).
    replicate_env.emulator.update(
        create_5xx_first=1, create_5xx_after_store=True, list_5xx_rate=1.0, fault_status=500
    )
    client = ReplicateClient(poll_interval=0.02)
    before = time.time()

    with pytest.raises(PredictionMayExistError) as caught:
        client.run_model(FLUX, {"prompt": "lost"})

    error = caught.value
    assert "may exist" in str(error)
    assert error.model == FLUX
    assert error.input_digest == input_digest({"prompt": "lost"})
    assert before <= error.sent_at <= time.time()
    assert error.input_digest in str(error)
    assert stats(replicate_env)["predictions_created"] == 1
    assert requests(replicate_env, "models.predictions.create") == 1
    client.close()


# -- streams ---------------------------------------------------------------------------


def final_output(client: ReplicateClient) -> list[str]:
    newest = client.list_predictions(limit=1).results[0]
    return list(client.get_prediction(newest).output)


def test_dropped_stream_resumes_after_the_last_event(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(stream_drop_after_events=2)
    client = ReplicateClient(poll_interval=0.02)

    events = list(client.stream_output(LLAMA, {"prompt": "a long story"}))

    outputs = [str(e) for e in events if e.event == "output"]
    assert outputs == final_output(client)  # every token, once, in order
    assert [e.event for e in events][-1] == "done"
    assert requests(replicate_env, "predictions.stream") == 2
    client.close()


def test_dropped_stream_falls_back_to_the_final_state(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(stream_drop_after_events=2)
    client = ReplicateClient(max_retries=0, poll_interval=0.02)  # no second stream

    async def host() -> list[Any]:
        return [e async for e in client.stream_output_async(LLAMA, {"prompt": "story"})]

    events = asyncio.run(host())

    outputs = [str(e) for e in events if e.event == "output"]
    assert outputs == final_output(client)
    assert events[-1].event == "done"
    assert requests(replicate_env, "predictions.stream") == 1
    client.close()


def test_dropped_stream_with_no_way_back_raises(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(stream_drop_after_events=2, get_5xx_first=100, fault_status=500)
    client = ReplicateClient(max_retries=0, poll_interval=0.02)
    received: list[Any] = []

    with pytest.raises(TransportError, match="dropped"):
        received.extend(client.stream_output(LLAMA, {"prompt": "story"}))

    assert len(received) == 0 or received[-1].event != "done"
    client.close()


def test_deployment_streams(replicate_env: EmulatorServer) -> None:
    client = ReplicateClient(poll_interval=0.02)

    events = list(client.stream_output("deployments/emulator/llama", {"prompt": "hi"}))

    outputs = [str(e) for e in events if e.event == "output"]
    assert outputs
    assert outputs == final_output(client)
    assert requests(replicate_env, "deployments.predictions.create") == 1
    client.close()


# -- waiting ---------------------------------------------------------------------------


def test_wait_timeout_carries_the_prediction(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(time_scale=1.0)
    client = ReplicateClient(poll_interval=0.02)
    prediction = client.create_prediction("kling-ai/kling-video", input_params={"prompt": "x"})

    with pytest.raises(PredictionTimeoutError) as caught:
        client.wait_for_prediction(prediction.id, timeout=0.05)

    assert caught.value.prediction.id == prediction.id
    assert not caught.value.prediction.status.terminal
    assert prediction.id in str(caught.value)
    client.cancel_prediction(prediction)
    client.close()
