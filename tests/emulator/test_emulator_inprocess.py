"""Mount the emulator in-process with httpx.ASGITransport: fast, no sockets, same client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

from engine.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio
FLUX = "black-forest-labs/flux-schnell"


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(EmulatorConfig(time_scale=0.001))


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[replicate.Client]:
    """Return an async-only replicate client whose transport is the ASGI app."""
    c = replicate.Client(
        api_token=emulator.config.token,
        base_url="https://emulator.test",
        transport=httpx.ASGITransport(app=emulator.app),
    )
    c.poll_interval = 0.001
    yield c
    await c._async_client.aclose()


async def test_list_paginates_newest_first_with_absolute_next(client: replicate.Client) -> None:
    for i in range(205):
        await client.predictions.async_create(model=FLUX, input={"prompt": f"p{i}"})
    first = await client.predictions.async_list()
    assert len(first.results) == 100
    assert first.results[0].input == {"prompt": "p204"}
    assert first.next is not None
    assert first.next.startswith("https://emulator.test/v1/predictions?cursor=")
    pages = [
        page async for page in replicate.pagination.async_paginate(client.predictions.async_list)
    ]
    assert [len(p) for p in pages] == [100, 100, 5]
    ids = [p.id for page in pages for p in page]
    assert len(set(ids)) == 205
    assert pages[-1][-1].input == {"prompt": "p0"}


async def test_async_run_and_stats_in_process(client: replicate.Client, emulator: Emulator) -> None:
    [output] = await client.async_run(FLUX, input={"prompt": "x"}, wait=False)
    assert (await output.aread()).startswith(b"\x89PNG")
    snapshot = emulator.stats.snapshot()
    assert snapshot["predictions_created"] == 1
    assert snapshot["requests"]["models.predictions.create 201"] == 1
    assert snapshot["bytes_served"] > 0


async def test_read_bucket_throttles_gets_with_retry_after(emulator: Emulator) -> None:
    emulator.update(read_rate_per_min=60, read_burst=2)
    headers = {"Authorization": f"Bearer {emulator.config.token}"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://e", headers=headers
    ) as http:
        statuses = [(await http.get("/v1/account")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        throttled = await http.get("/v1/account")
        assert throttled.headers["retry-after"] == "1"
        assert throttled.json()["retry_after"] == 1
        assert throttled.headers["content-type"] == "application/problem+json"
        # Output downloads are a CDN: never throttled.
        assert (await http.get("/_emulator/stats")).status_code == 200


async def test_admin_endpoints_need_no_token(emulator: Emulator) -> None:
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://e") as http:
        assert (await http.get("/v1/account")).status_code == 401
        changed = await http.post("/_emulator/config", json={"throttle_next_creates": 1, "seed": 7})
        assert changed.status_code == 200
        assert changed.json()["seed"] == 7
        assert "token" not in changed.json()
        assert emulator.remaining["throttle_next_creates"] == 1
        bad = await http.post("/_emulator/config", json={"no_such_knob": 1})
        assert bad.status_code == 400
        stats = (await http.get("/_emulator/stats")).json()
        assert stats["requests"] == {"account.get 401": 1}


async def test_5xx_faults_are_deterministic(client: replicate.Client, emulator: Emulator) -> None:
    emulator.update(create_5xx_first=1, fault_status=502)
    with pytest.raises(ReplicateError) as info:
        await client.predictions.async_create(model=FLUX, input={"prompt": "x"})
    assert info.value.status == 502
    assert emulator.stats.predictions_created == 0
    emulator.update(create_5xx_first=1, create_5xx_after_store=True)
    with pytest.raises(ReplicateError):
        await client.predictions.async_create(model=FLUX, input={"prompt": "x"})
    assert emulator.stats.predictions_created == 1  # an orphan: stored, but the caller saw 502
    prediction = await client.predictions.async_create(model=FLUX, input={"prompt": "y"})
    emulator.update(get_5xx_first=2, fault_status=503)  # GET 503s are retried by the client
    again = await client.predictions.async_get(prediction.id)
    assert again.id == prediction.id
    assert emulator.stats.requests["predictions.get", 503] == 2


async def test_cancel_after_deadline_cancels_a_running_prediction(emulator: Emulator) -> None:
    emulator.update(time_scale=1.0, model_timings={FLUX: {"cold_start": 0.0, "run_time": 5.0}})
    headers = {"Authorization": f"Bearer {emulator.config.token}", "Cancel-After": "20ms"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://e", headers=headers
    ) as http:
        created = await http.post(
            f"/v1/models/{FLUX}/predictions",
            json={"input": {"prompt": "x"}},
            headers={"Prefer": "wait=1"},
        )
    body = created.json()
    assert body["status"] == "canceled"
    assert body["metrics"]["predict_time"] == pytest.approx(0.02, abs=0.01)


async def test_webhook_without_lifespan_is_refused_before_storing(emulator: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emulator.config.token}"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://e", headers=headers
    ) as http:
        refused = await http.post(
            f"/v1/models/{FLUX}/predictions",
            json={"input": {"prompt": "x"}, "webhook": "http://127.0.0.1:9/hook"},
        )
        assert refused.status_code == 503
        assert emulator.stats.predictions_created == 0
        async with emulator.running():
            accepted = await http.post(
                f"/v1/models/{FLUX}/predictions",
                json={"input": {"prompt": "x"}, "webhook": "http://127.0.0.1:9/hook"},
            )
        assert accepted.status_code == 201


async def test_models_list_search_and_unknown_paths(
    client: replicate.Client, emulator: Emulator
) -> None:
    listed = await client.models.async_list()
    assert FLUX in {f"{m.owner}/{m.name}" for m in listed.results}
    found = await client.models.async_search("llama")
    assert [m.name for m in found.results] == ["meta-llama-3-70b-instruct"]
    with pytest.raises(ReplicateError) as info:
        await client.models.async_get("no/such")
    assert info.value.status == 404
    headers = {"Authorization": f"Bearer {emulator.config.token}"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://e", headers=headers
    ) as http:
        missing = await http.get("/v1/nothing")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        wrong_version = await http.get(f"/v1/models/{FLUX}/versions/{'0' * 64}")
        assert wrong_version.status_code == 404
