"""Output files: async iteration, Range, expiry, cuts, and a 200 MB video at flat memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest
import replicate
from replicate.helpers import FileOutput

from engine.emulator import EmulatorServer
from engine.emulator.media import video_sha256

VIDEO = "kling-ai/kling-video"
FLUX = "black-forest-labs/flux-schnell"


@pytest.fixture
def http(replicate_env: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {replicate_env.token}"}
    with httpx.Client(headers=headers, verify=replicate_env.ssl_context()) as c:
        yield c


def video_url(client: replicate.Client) -> tuple[str, str]:
    prediction = client.predictions.create(model=VIDEO, input={"prompt": "waves"})
    prediction.wait()
    assert prediction.status == "succeeded"
    return prediction.id, prediction.output


def test_range_requests_answer_206(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    size = 1_000_000
    replicate_env.emulator.update(video_size=size)
    pid, url = video_url(client)
    whole = http.get(url)
    assert whole.status_code == 200
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(whole.content).hexdigest() == video_sha256(pid, size)
    assert whole.content[4:8] == b"ftyp"
    part = http.get(url, headers={"Range": "bytes=100000-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100000-{size - 1}/{size}"
    assert part.content == whole.content[100000:]
    tail = http.get(url, headers={"Range": "bytes=-10"})
    assert tail.content == whole.content[-10:]
    assert http.get(url, headers={"Range": f"bytes={size}-"}).status_code == 416
    assert httpx.get(url, verify=replicate_env.ssl_context()).status_code == 401


def test_cut_first_downloads_then_resume(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    size = 512 * 1024
    replicate_env.emulator.update(video_size=size, cut_first_downloads=1)
    _, url = video_url(client)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(url)
    rest = http.get(url, headers={"Range": f"bytes={size // 2}-"})
    assert rest.status_code == 206
    again = http.get(url)
    assert again.status_code == 200
    assert len(again.content) == size
    assert replicate_env.emulator.stats.downloads_cut == 1


def test_expired_output_is_removed_and_404(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    prediction = client.predictions.create(model=FLUX, input={"prompt": "x"})
    prediction.wait()
    [url] = prediction.output
    assert http.get(url).status_code == 200
    replicate_env.emulator.update(output_expiry=0.0)  # an hour passes
    later = client.predictions.get(prediction.id)
    assert later.output is None
    assert (
        http.get(f"{replicate_env.base_url}/v1/predictions/{prediction.id}").json()["data_removed"]
        is True
    )
    assert http.get(url).status_code == 404


@pytest.mark.anyio
async def test_async_iteration_of_file_output(replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(video_size=300_000)
    client = replicate.Client()
    client.poll_interval = 0.01
    try:
        prediction = await client.predictions.async_create(model=VIDEO, input={"prompt": "x"})
        await prediction.async_wait()
        output = await client.async_run(VIDEO, input={"prompt": "x"}, wait=False)
        chunks = [chunk async for chunk in output]
        data = b"".join(chunks)
        assert len(chunks) > 1
        assert len(data) == 300_000
        assert data == await output.aread()
    finally:
        await client._async_client.aclose()


@pytest.mark.slow
def test_200_mb_video_streams_with_flat_memory(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    size = 200 * 1024 * 1024
    replicate_env.emulator.update(video_size=size)
    pid, url = video_url(client)
    output = FileOutput(url, client)  # what run() would return for this prediction
    digest, total = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        for chunk in output:
            digest.update(chunk)
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 20 * 1024 * 1024, f"peak {peak} bytes while streaming {size}"
    assert replicate_env.emulator.stats.bytes_served >= size
    assert digest.hexdigest() == video_sha256(pid, size)
