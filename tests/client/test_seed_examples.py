"""Every example of the seed document, adapted only in its import line, against the emulator.

The seed is ``../shared/seed/replicate-client-README.md``. Each test runs the example's code
as written (relative paths, print calls) over real HTTPS with the real replicate client,
then asserts on what a user would check: files on disk, statuses, the emulator's counters.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import replicate.exceptions
import stamina
from replicate.helpers import FileOutput

from engine import (
    AuthenticationError,
    ConfigError,
    ReplicateClient,
    get_replicate_client,
    reset_replicate_client,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KANDINSKY_VERSION = "ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each example from a scratch folder with a fresh singleton and no retry sleeps."""
    monkeypatch.chdir(tmp_path)
    reset_replicate_client()
    with stamina.set_testing(True, attempts=3):
        yield
    reset_replicate_client()


@pytest.fixture
def client(replicate_env: Any) -> Iterator[ReplicateClient]:
    with ReplicateClient(poll_interval=0.02) as client:
        yield client


def created(server: Any) -> int:
    return int(server.emulator.stats.snapshot()["predictions_created"])


# -- Basic usage -----------------------------------------------------------------------


def test_basic_usage_flux_run_and_download(replicate_env: Any, tmp_path: Path) -> None:
    client = ReplicateClient()

    output = client.run_model(
        "black-forest-labs/flux-schnell",
        input_params={"prompt": "astronaut riding a rocket", "output_format": "png"},
    )

    assert output
    assert isinstance(output[0], FileOutput)
    file_path = client.download_output(output[0], "./outputs/image.png")
    print(f"Saved to: {file_path}")

    assert isinstance(file_path, str)
    assert Path(file_path).is_absolute()
    saved = Path(file_path)
    assert saved == tmp_path / "outputs" / "image.png"
    assert saved.read_bytes().startswith(PNG_MAGIC)
    assert not list(saved.parent.glob("*.part"))
    assert created(replicate_env) == 1


def test_singleton_access(replicate_env: Any) -> None:
    client = get_replicate_client()

    assert client is get_replicate_client()
    assert isinstance(client, ReplicateClient)


# -- File output handling --------------------------------------------------------------


def test_sdxl_file_outputs_and_urls(client: ReplicateClient, tmp_path: Path) -> None:
    output = client.run_model("stability-ai/sdxl", {"prompt": "sunset over mountains"})

    assert isinstance(output, list)
    assert output
    paths = []
    for i, file_output in enumerate(output):
        assert isinstance(file_output, FileOutput)
        path = client.download_output(file_output, f"./outputs/image_{i}.png")
        print(f"Saved: {path}")
        paths.append(path)
    for i, path in enumerate(paths):
        assert path == str(tmp_path / "outputs" / f"image_{i}.png")
        assert Path(path).stat().st_size > 0

    output_url = client.run_model(
        "stability-ai/sdxl", {"prompt": "sunset over mountains"}, use_file_output=False
    )
    print(output_url)

    assert isinstance(output_url, list)
    assert output_url
    assert all(isinstance(u, str) and u.startswith("https://") for u in output_url)


# -- Background predictions ------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve a loopback HTTP endpoint that records every webhook body it receives."""
    bodies: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhook", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_background_prediction_with_webhook(
    client: ReplicateClient,
    webhook_receiver: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    webhook_url, received = webhook_receiver

    prediction = client.create_prediction(
        "ai-forever/kandinsky-2.2",
        version_id=KANDINSKY_VERSION,
        input_params={"prompt": "Watercolor painting of an underwater submarine"},
        webhook=webhook_url,
        webhook_events_filter=["completed"],
    )
    print(f"Prediction ID: {prediction.id}")
    print(f"Status: {prediction.status}")
    assert prediction.id
    assert prediction.status in ("starting", "processing")

    completed = client.wait_for_prediction(prediction, timeout=300)
    print(f"Final status: {completed.status}")
    assert completed.status == "succeeded"

    assert completed.output
    path = client.download_output(completed.output, "./output.png")
    # A list output is saved one file per item.
    assert isinstance(path, list)
    assert path[0] == str(tmp_path / "output_0.png")
    assert all(Path(p).stat().st_size > 0 for p in path)

    # Only the "completed" event is delivered, carrying the final prediction.
    for _ in range(200):
        if received:
            break
        threading.Event().wait(0.01)
    assert [b["status"] for b in received] == ["succeeded"]
    assert received[0]["id"] == prediction.id


# -- Async operations ------------------------------------------------------------------


def test_async_gather_of_three(replicate_env: Any) -> None:
    async def generate_multiple_images() -> list[Any]:
        client = get_replicate_client()

        prompts = [
            "A chariot pulled by two rainbow unicorns",
            "A chariot pulled by four rainbow unicorns",
            "A chariot pulled by six rainbow unicorns",
        ]

        tasks = [
            client.run_model_async("stability-ai/sdxl", {"prompt": prompt}) for prompt in prompts
        ]

        results = await asyncio.gather(*tasks)
        return list(results)

    results = asyncio.run(generate_multiple_images())

    assert len(results) == 3
    assert all(isinstance(r, list) and r and isinstance(r[0], FileOutput) for r in results)
    assert len({str(r[0]) for r in results}) == 3
    assert created(replicate_env) == 3


# -- Streaming -------------------------------------------------------------------------


def test_llm_streaming(client: ReplicateClient) -> None:
    pieces = []
    for event in client.stream_output(
        "meta/meta-llama-3-70b-instruct", {"prompt": "Write a haiku about llamas"}
    ):
        print(str(event), end="")
        pieces.append(str(event))

    printed = "".join(pieces)
    text = "".join(
        str(e)
        for e in client.stream_output(
            "meta/meta-llama-3-70b-instruct", {"prompt": "Write a haiku about llamas"}
        )
        if e.event == "output"
    )
    assert text.strip()
    # Non-output events (done, logs) print nothing, so the two agree.
    assert printed == text


# -- Prediction management -------------------------------------------------------------


def test_list_and_paginate(client: ReplicateClient, replicate_env: Any) -> None:
    async def create_many(n: int) -> list[str]:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> str:
            async with sem:
                p = await client.create_prediction_async(
                    "black-forest-labs/flux-schnell", input_params={"prompt": f"p{i}"}
                )
                return p.id

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    ids = asyncio.run(create_many(101))

    page1 = client.list_predictions()
    for pred in page1:
        print(f"{pred.id}: {pred.status}")
    assert len(list(page1)) == 20  # the seed's default limit

    listed = [p.id for p in page1]
    page = page1
    while page.next:
        page = client.list_predictions(cursor=page.next)
        listed += [p.id for p in page]
    assert listed == list(reversed(ids_in_creation_order(replicate_env)))
    assert sorted(listed) == sorted(ids)

    # A limit larger than the API's page of 100 reads as many pages as it takes.
    everything = client.list_predictions(limit=150)
    assert [p.id for p in everything] == listed
    assert everything.next is None
    first_101 = client.list_predictions(limit=101)
    assert [p.id for p in first_101] == listed


def ids_in_creation_order(server: Any) -> list[str]:
    return [record.id for record in server.emulator.order]


def test_cancel_running_prediction(client: ReplicateClient, replicate_env: Any) -> None:
    replicate_env.emulator.update(time_scale=1.0)  # long enough to still be running
    prediction = client.create_prediction("kling-ai/kling-video", input_params={"prompt": "x"})

    canceled = client.cancel_prediction(prediction)

    assert canceled.id == prediction.id
    assert canceled.status == "canceled"


# -- Error handling --------------------------------------------------------------------


def test_model_error_is_replicates(client: ReplicateClient, replicate_env: Any) -> None:
    caught: list[replicate.exceptions.ModelError] = []
    try:
        client.run_model("emulator/fails", {"prompt": "test"})
    except replicate.exceptions.ModelError as e:
        print(f"Prediction ID: {e.prediction.id}")
        print(f"Status: {e.prediction.status}")
        print(f"Logs: {e.prediction.logs}")
        caught.append(e)

    assert caught, "ModelError was not raised"
    error = caught[0]
    assert error.prediction.id
    assert error.prediction.status == "failed"
    assert error.prediction.logs
    assert error.prediction.error
    assert error.prediction.id in str(error)
    assert created(replicate_env) == 1  # a failed prediction is not retried


def test_wrong_token_is_authentication_error(replicate_env: Any) -> None:
    client = ReplicateClient(api_token="r8_wrong_token_0000000000000000")

    with pytest.raises(AuthenticationError) as caught:
        client.run_model("black-forest-labs/flux-schnell", {"prompt": "x"})

    assert caught.value.status == 401
    assert "r8_wrong_token" not in str(caught.value)
    assert created(replicate_env) == 0


def test_missing_token_is_config_error_at_first_use(
    replicate_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    monkeypatch.delenv("REPLICATE_API_KEY", raising=False)

    client = ReplicateClient()  # construction does not fail

    with pytest.raises(ConfigError) as caught:
        client.run_model("black-forest-labs/flux-schnell", {"prompt": "x"})
    assert "REPLICATE_API_TOKEN" in str(caught.value)
    assert "REPLICATE_API_KEY" in str(caught.value)
    assert caught.value.__cause__ is None  # no httpx internals underneath


def test_timeout_is_a_timeout_error(client: ReplicateClient, replicate_env: Any) -> None:
    replicate_env.emulator.update(time_scale=1.0)
    prediction = client.create_prediction("kling-ai/kling-video", input_params={"prompt": "x"})

    with pytest.raises(TimeoutError) as caught:
        client.wait_for_prediction(prediction, timeout=0.05)

    assert caught.value.prediction.id == prediction.id  # type: ignore[attr-defined]
    client.cancel_prediction(prediction)


# -- Integration example: video generation ---------------------------------------------


def test_video_generation_example(replicate_env: Any, tmp_path: Path) -> None:
    def generate_video_scene(prompt: str, duration: int = 5) -> str:
        """Generate a video scene using Kling AI."""
        client = get_replicate_client()

        output = client.run_model(
            "kling-ai/kling-video", input_params={"prompt": prompt, "duration": duration}
        )

        # The seed indexes output[0]; kling returns one file, so take it whole.
        video = output[0] if isinstance(output, list) else output
        video_path = client.download_output(video, f"./temp/scene_{abs(hash(prompt))}.mp4")
        assert isinstance(video_path, str)
        return video_path

    replicate_env.emulator.update(video_size=64 * 1024)
    video = generate_video_scene("Luxury product showcase with soft lighting", duration=5)

    assert Path(video).parent == tmp_path / "temp"
    assert Path(video).stat().st_size == 64 * 1024
