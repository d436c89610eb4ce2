"""The gateway against the emulator over HTTPS, with the real replicate client inside."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina
import structlog
from structlog.testing import capture_logs

from engine._config import ApiConfig, Secret
from engine._errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from engine._gateway import Gateway
from engine._limits import Budget, Limits
from engine._logs import configure_logging
from engine._prediction import Prediction, PredictionStatus
from engine._retry import RetryPolicy
from jobs.model import ModelRef

pytestmark = pytest.mark.anyio

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")
LLAMA = ModelRef.parse("meta/meta-llama-3-70b-instruct")
FAST = RetryPolicy(attempts=4, timeout=30, wait_initial=0.001, wait_max=0.01)


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """Keep stamina's attempts but drop its sleeps (budget cooldowns still wait)."""
    with stamina.set_testing(True, attempts=4):
        yield


@pytest.fixture
def limits() -> Limits:
    return Limits(create=Budget("create", 60_000), read=Budget("read", 60_000))


@pytest.fixture
async def gateway(api: ApiConfig, limits: Limits) -> AsyncIterator[Gateway]:
    async with Gateway(api, limits, FAST) as gw:
        yield gw


def requests(server: Any) -> dict[str, int]:
    counts: dict[str, int] = server.emulator.stats.snapshot()["requests"]
    return counts


async def finish(gateway: Gateway, prediction: Prediction) -> Prediction:
    with anyio.fail_after(10):
        while not prediction.status.terminal:
            await anyio.sleep(0.01)
            prediction = await gateway.get(prediction.id)
    return prediction


async def test_create_by_model_then_poll_to_success(gateway: Gateway, server: Any) -> None:
    created = await gateway.create(FLUX, {"prompt": "a red fox", "num_outputs": 2})
    assert created.status is PredictionStatus.STARTING
    assert created.model == FLUX.slug
    done = await finish(gateway, created)
    assert done.status is PredictionStatus.SUCCEEDED
    assert isinstance(done.output, list)
    assert len(done.output) == 2
    assert all(url.startswith("https://") for url in done.output)
    assert requests(server)["models.predictions.create 201"] == 1


async def test_create_routes_version_and_deployment(gateway: Gateway, server: Any) -> None:
    version = (await gateway.get_version(FLUX))["id"]
    by_version = await gateway.create(ModelRef(FLUX.owner, FLUX.name, version), {"prompt": "v"})
    by_deployment = await gateway.create(
        ModelRef.parse("deployments/emulator/flux"), {"prompt": "d"}
    )
    assert by_version.version == version
    assert by_deployment.status is PredictionStatus.STARTING
    counts = requests(server)
    assert counts["predictions.create 201"] == 1
    assert counts["deployments.predictions.create 201"] == 1


async def test_invalid_input_is_not_retried_and_names_the_field(
    gateway: Gateway, server: Any
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.create(FLUX, {"num_outputs": 2})  # prompt is required
    assert caught.value.status == 422
    assert caught.value.permanent
    assert caught.value.invalid_fields
    assert requests(server)["models.predictions.create 422"] == 1
    assert server.emulator.stats.snapshot()["predictions_created"] == 0


async def test_a_5xx_on_create_is_not_retried(gateway: Gateway, server: Any) -> None:
    # The server may have stored the prediction before failing: a retry could pay twice.
    server.emulator.update(create_5xx_first=1, fault_status=500)
    with pytest.raises(ServerError) as caught:
        await gateway.create(FLUX, {"prompt": "once"})
    assert caught.value.status == 500
    assert requests(server)["models.predictions.create 500"] == 1
    assert "models.predictions.create 201" not in requests(server)


async def test_gets_recover_from_5xx_and_every_attempt_takes_the_read_budget(
    gateway: Gateway, server: Any, limits: Limits
) -> None:
    created = await gateway.create(FLUX, {"prompt": "5xx"})
    # 503 is retried inside replicate's RetryTransport, 500 by our stamina policy: both
    # kinds of retry pass the budget transport.
    server.emulator.update(get_5xx_first=2, fault_status=503)
    assert (await gateway.get(created.id)).id == created.id
    server.emulator.update(get_5xx_first=2, fault_status=500)
    assert (await gateway.get(created.id)).id == created.id
    counts = requests(server)
    assert counts["predictions.get 503"] == 2
    assert counts["predictions.get 500"] == 2
    assert counts["predictions.get 200"] == 2
    reads = sum(n for key, n in counts.items() if not key.startswith("models.predictions.create"))
    assert limits.read.acquired == reads
    assert limits.create.acquired == 1


async def test_the_caller_says_which_requests_are_creates(
    gateway: Gateway, server: Any, limits: Limits
) -> None:
    # A create and a stream's POST take the create budget; a cancel (a POST too) and the
    # stream's follow-up GET take the read budget.
    created = await gateway.create(FLUX, {"prompt": "kinds"})
    await gateway.cancel(created.id)
    assert (limits.create.acquired, limits.read.acquired) == (1, 1)
    events = [e async for e in gateway.stream(LLAMA, {"prompt": "hi", "max_tokens": 2})]
    assert events[-1].event == "done"
    assert limits.create.acquired == 2
    assert limits.read.acquired == 2


async def test_a_429_on_create_cools_the_budget_down_then_succeeds(
    gateway: Gateway, server: Any, limits: Limits
) -> None:
    server.emulator.update(throttle_next_creates=1)
    start = anyio.current_time()
    with capture_logs() as logs:
        created = await gateway.create(FLUX, {"prompt": "throttled"})
    assert anyio.current_time() - start >= 1.0  # Retry-After: 1 is a floor
    assert created.status is PredictionStatus.STARTING
    assert limits.create.throttled == 1
    assert limits.create.throttled_seconds >= 1.0
    assert requests(server)["models.predictions.create 429"] == 1
    assert server.emulator.stats.snapshot()["predictions_created"] == 1
    calls = [e for e in logs if e["event"] == "api.call"]
    assert [e["attempt"] for e in calls] == [1, 2]
    assert calls[0]["error"] == "RateLimitedError"
    assert any(e["event"] == "api.throttled" for e in logs)


async def test_low_credit_answer_lowers_the_create_rate(
    gateway: Gateway, server: Any, limits: Limits
) -> None:
    server.emulator.update(throttle_next_creates=1, low_credit=True)
    with stamina.set_testing(True, attempts=1), pytest.raises(RateLimitedError) as caught:
        await gateway.create(FLUX, {"prompt": "poor"})
    assert caught.value.low_credit_rate == 6
    assert caught.value.retry_after >= 1
    assert not caught.value.permanent
    assert limits.create.rate_per_min == 6
    assert limits.read.rate_per_min == 60_000


async def test_cancel_list_and_paginate(gateway: Gateway, server: Any) -> None:
    server.emulator.update(time_scale=1.0)  # slow enough to cancel while it runs
    created = [await gateway.create(FLUX, {"prompt": f"list {i}"}) for i in range(3)]
    canceled = await gateway.cancel(created[0].id)
    assert canceled.status is PredictionStatus.CANCELED
    page = await gateway.list()
    ids = {p.id for p in page.results}
    cursor = page.next
    while cursor is not None:
        page = await gateway.list(cursor)
        ids |= {p.id for p in page.results}
        cursor = page.next
    assert {p.id for p in created} <= ids


async def test_model_and_version_json(gateway: Gateway) -> None:
    model = await gateway.get_model(FLUX)
    assert model["owner"] == FLUX.owner
    version = await gateway.get_version(FLUX)
    assert version["id"] == model["latest_version"]["id"]
    assert "Input" in version["openapi_schema"]["components"]["schemas"]
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.get_model(ModelRef.parse("nobody/nothing"))
    assert caught.value.status == 404


async def test_stream_yields_output_then_done(gateway: Gateway) -> None:
    events = [e async for e in gateway.stream(LLAMA, {"prompt": "hello", "max_tokens": 8})]
    kinds = [e.event for e in events]
    assert kinds[-1] == "done"
    assert "output" in kinds
    assert "".join(e.data for e in events if e.event == "output")


async def test_aborted_prediction_survives_the_clients_parser(
    api: ApiConfig, limits: Limits, server: Any
) -> None:
    # replicate 1.0.7 cannot parse `aborted`; the deadline passes before the cold start ends.
    server.emulator.update(
        time_scale=1.0,
        model_timings={FLUX.slug: {"cold_start": 30.0, "run_time": 1.0}},
    )
    deadline = ApiConfig(
        token=api.token, base_url=api.base_url, ca_file=api.ca_file, cancel_after=1
    )
    async with Gateway(deadline, limits, FAST) as gateway:
        created = await gateway.create(FLUX, {"prompt": "too late"})
        await anyio.sleep(1.1)
        aborted = await gateway.get(created.id)
    assert aborted.status is PredictionStatus.ABORTED
    assert aborted.status.terminal


async def test_wrong_token_is_an_authentication_error_without_the_token(
    api: ApiConfig, limits: Limits
) -> None:
    secret = "r8_wrong_token_0123456789"
    wrong = ApiConfig(token=Secret(secret), base_url=api.base_url, ca_file=api.ca_file)
    with capture_logs() as logs:
        async with Gateway(wrong, limits, FAST) as gateway:
            with pytest.raises(AuthenticationError) as caught:
                await gateway.get("abc")
    assert caught.value.status == 401
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    assert secret not in repr(logs)


async def test_missing_token_fails_before_any_request(server: Any, limits: Limits) -> None:
    no_token = ApiConfig(token=None, base_url=server.base_url, ca_file=server.ca_file)
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        async with Gateway(no_token, limits, FAST):
            pass
    assert requests(server) == {}
    assert limits.read.acquired == limits.create.acquired == 0


async def test_refused_connection_is_a_retried_unsent_transport_error(
    limits: Limits,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = ApiConfig(token=Secret("r8_secret_value_123"), base_url=f"https://127.0.0.1:{port}")
    with capture_logs() as logs:
        async with Gateway(api, limits, FAST) as gateway:
            with pytest.raises(TransportError) as caught:
                await gateway.create(FLUX, {"prompt": "nobody home"})
    assert caught.value.sent is False
    assert limits.create.acquired == 4  # a create that never left is retried
    assert [e["attempt"] for e in logs if e["event"] == "api.call"] == [1, 2, 3, 4]
    assert "r8_secret_value_123" not in repr(logs) + str(caught.value)


def test_configured_logs_mask_tokens_in_every_value(tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    opened = configure_logging(json=True, level="DEBUG", file=log_file)
    assert opened is not None
    try:
        structlog.get_logger("test").info(
            "api.call",
            header="Authorization: Bearer r8_live_secret_42",
            nested={"token": ["r8_live_secret_42"]},
        )
    finally:
        structlog.reset_defaults()
        opened.close()
    text = log_file.read_text()
    assert '"event": "api.call"' in text
    assert "r8_live_secret_42" not in text
    assert "[REDACTED]" in text
