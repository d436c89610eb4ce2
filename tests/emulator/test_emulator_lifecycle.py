"""Lifecycle details: sync-wait expiry, partial output, cancel over SSE, seeded faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import replicate

from engine.emulator import Emulator, EmulatorConfig, EmulatorServer

pytestmark = pytest.mark.anyio
FLUX = "black-forest-labs/flux-schnell"
LLAMA = "meta/meta-llama-3-70b-instruct"
SLOW = {"cold_start": 0.0, "run_time": 30.0}


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(EmulatorConfig(time_scale=0.001))


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {emulator.config.token}"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://e", headers=headers) as c:
        yield c


async def create(
    http: httpx.AsyncClient, model: str, prefer: str | None = None
) -> dict[str, object]:
    headers = {"Prefer": prefer} if prefer else {}
    response = await http.post(
        f"/v1/models/{model}/predictions", json={"input": {"prompt": "x"}}, headers=headers
    )
    assert response.status_code == 201
    body: dict[str, object] = response.json()
    return body


@pytest.mark.slow
async def test_sync_wait_expiry_answers_starting(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    # The shortest window Prefer allows is one second, so this test takes one.
    emulator.update(time_scale=1.0, model_timings={FLUX: SLOW})
    body = await create(http, FLUX, "wait=1")
    assert body["status"] == "starting"
    assert body["output"] is None


@pytest.mark.slow
async def test_sync_partial_on_expiry_returns_processing(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    emulator.update(time_scale=1.0, model_timings={LLAMA: {"cold_start": 0.0, "run_time": 2.0}})
    emulator.update(sync_partial_on_expiry=True)
    body = await create(http, LLAMA, "wait=1")
    assert body["status"] == "processing"
    assert isinstance(body["output"], list)
    assert 0 < len(body["output"]) < 20


async def test_cancel_ends_an_sse_stream_with_reason(emulator_server: EmulatorServer) -> None:
    # ASGITransport buffers whole responses, so streaming needs the real server.
    emulator_server.emulator.update(time_scale=1.0, model_timings={LLAMA: SLOW})
    headers = {"Authorization": f"Bearer {emulator_server.token}"}
    verify = emulator_server.ssl_context()
    async with httpx.AsyncClient(
        base_url=emulator_server.base_url, headers=headers, verify=verify
    ) as http:
        body = await create(http, LLAMA)
        urls = body["urls"]
        assert isinstance(urls, dict)
        async with http.stream("GET", urls["stream"]) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await anext(lines) == ": hi"
            canceled = await http.post(f"/v1/predictions/{body['id']}/cancel")
            assert canceled.json()["status"] == "canceled"
            text = [line async for line in lines]
    done = text.index("event: done")
    assert text[done + 1].startswith("id: ")
    assert text[done + 2] == 'data: {"reason": "canceled"}'
    assert emulator_server.emulator.stats.concurrent(emulator_server.emulator.clock()) == 0


async def test_rate_faults_follow_the_seed() -> None:
    def outcomes(seed: int) -> list[str]:
        em = Emulator(EmulatorConfig(seed=seed, transient_failure_rate=0.5))
        return [str(em.rng.random() < 0.5) for _ in range(5)]

    assert outcomes(3) == outcomes(3)


async def test_transient_failures_by_rate(emulator: Emulator, http: httpx.AsyncClient) -> None:
    emulator.update(transient_failure_rate=1.0)
    body = await create(http, FLUX, "wait=5")
    assert body["status"] == "failed"
    assert body["error"] == "Prediction interrupted; please retry (code: PA)"
    emulator.update(transient_failure_rate=0.0, permanent_failure_rate=1.0)
    body = await create(http, FLUX, "wait=5")
    assert "NSFW" in str(body["error"])


async def test_latency_and_stats_windows(emulator: Emulator, http: httpx.AsyncClient) -> None:
    emulator.update(latency_seconds=0.01, stall_rate=1.0, stall_seconds=0.01)
    for _ in range(3):
        await create(http, FLUX)
    snap = emulator.stats.snapshot()
    assert snap["peak_creates_per_60s"] == 3
    assert snap["peak_concurrent"] >= 1


async def test_prediction_reaches_the_client_shape(emulator: Emulator) -> None:
    client = replicate.Client(
        api_token=emulator.config.token,
        base_url="https://e",
        transport=httpx.ASGITransport(app=emulator.app),
    )
    try:
        prediction = await client.predictions.async_create(model=FLUX, input={"prompt": "x"})
        client.poll_interval = 0.001
        await prediction.async_wait()
        assert prediction.status == "succeeded"
        assert prediction.progress is not None
        assert prediction.progress.percentage == 1.0
    finally:
        await client._async_client.aclose()
