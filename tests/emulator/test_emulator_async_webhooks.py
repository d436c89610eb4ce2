"""Concurrency with async_run, and signed webhook deliveries checked by the client's helper."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
import replicate
import uvicorn
from replicate.webhook import InvalidSignatureError, WebhookSigningSecret
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.emulator import EmulatorServer

FLUX = "black-forest-labs/flux-schnell"
LLAMA = "meta/meta-llama-3-70b-instruct"


@pytest.mark.anyio
async def test_async_run_twenty_at_once(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(time_scale=0.2)  # long enough for the 20 to overlap
    client = replicate.Client()
    client.poll_interval = 0.01
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        [output] = await client.async_run(FLUX, input={"prompt": f"fox {i}"}, wait=False)
        results[i] = await output.aread()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)
    finally:
        await client._async_client.aclose()
    assert len(results) == 20
    assert len(set(results.values())) == 20
    stats = replicate_env.emulator.stats.snapshot()
    assert stats["predictions_created"] == 20
    assert stats["duplicates"] == {}
    assert stats["peak_concurrent"] > 1
    assert stats["peak_creates_per_60s"] == 20


class Receiver:
    """A loopback HTTP webhook receiver that fails its first ``fail_first`` deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict[str, str], str, int]] = []
        self.done = threading.Event()
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    async def hook(self, request: Request) -> Response:
        body = (await request.body()).decode()
        status = 500 if len(self.received) < self.fail_first else 204
        self.received.append((dict(request.headers), body, status))
        if '"status":"succeeded"' in body.replace(" ", "") and status == 204:
            self.done.set()
        return Response(status_code=status)

    def __enter__(self) -> Receiver:
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve([self.sock])))
        self.thread.start()
        while not self.server.started:
            time.sleep(0.002)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=1) as r:
        yield r


def test_webhooks_are_signed_filtered_and_retried(
    replicate_env: EmulatorServer, receiver: Receiver
) -> None:
    client = replicate.Client()
    with client._client:
        secret = client.webhooks.default.secret()
        prediction = client.predictions.create(
            model=LLAMA,
            input={"prompt": "x"},
            webhook=receiver.url,
            webhook_events_filter=["start", "completed"],
        )
        assert receiver.done.wait(5)
    statuses = [status for _, _, status in receiver.received]
    assert statuses[0] == 500  # the first delivery failed and was retried with the same id
    first, retry = receiver.received[0][0], receiver.received[1][0]
    assert first["webhook-id"] == retry["webhook-id"]
    for headers, body, _ in receiver.received:
        replicate.webhooks.validate(
            headers=headers, body=body, secret=WebhookSigningSecret(key=secret.key), tolerance=60
        )
        assert f'"id": "{prediction.id}"' in body
    final = receiver.received[-1][1]
    assert '"status": "succeeded"' in final
    assert '"webhook_events_filter": ["start", "completed"]' in final
    # start (failed once, then retried) + completed
    assert len(receiver.received) == 3
    assert replicate_env.emulator.stats.webhooks_sent[500] == 1


def test_tampered_webhook_fails_validation(
    replicate_env: EmulatorServer, receiver: Receiver
) -> None:
    client = replicate.Client()
    with client._client:
        secret = client.webhooks.default.secret()
        client.predictions.create(model=FLUX, input={"prompt": "x"}, webhook=receiver.url)
        assert receiver.done.wait(5)
    headers, body, _ = receiver.received[-1]
    with pytest.raises(InvalidSignatureError):
        replicate.webhooks.validate(
            headers=headers, body=body + " ", secret=WebhookSigningSecret(key=secret.key)
        )
