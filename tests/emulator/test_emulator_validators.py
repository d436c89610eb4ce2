"""Output validators: a strong ETag and Last-Modified that follow the bytes; If-Range."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from engine.emulator import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio
BASE = "https://emulator.test"
SEGMENT = "emulator/segment-anything"


@dataclass
class Clock:
    now: float = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> Emulator:
    return Emulator(EmulatorConfig(video_size=200_000), clock=clock)


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {emulator.config.token}"}
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as c:
        yield c


async def finished_file(http: httpx.AsyncClient, clock: Clock, model: str, key: str) -> str:
    data = {"prompt": "x"} if model != SEGMENT else {"image": "https://example.com/a.png"}
    created = await http.post(f"/v1/models/{model}/predictions", json={"input": data})
    clock.now += 60
    output = (await http.get(created.json()["urls"]["get"])).json()["output"]
    url: str = output[key] if key != "masks" else output["masks"][0]
    return url


@pytest.mark.parametrize(
    ("model", "key"), [("emulator/video-thumbnail", "video"), (SEGMENT, "masks")]
)
async def test_etag_and_last_modified_change_with_the_bytes(
    http: httpx.AsyncClient, clock: Clock, emulator: Emulator, model: str, key: str
) -> None:
    url = await finished_file(http, clock, model, key)
    first, again = await http.get(url), await http.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"')  # strong: no W/
    assert again.headers["etag"] == etag
    assert again.content == first.content  # stable per prediction
    assert again.headers["last-modified"] == first.headers["last-modified"]
    clock.now += 10
    emulator.update(output_salt="restarted")  # same path, other bytes (a fresh emulator)
    changed = await http.get(url)
    assert changed.content != first.content
    assert changed.headers["etag"] != etag
    assert changed.headers["last-modified"] != first.headers["last-modified"]


async def test_if_range_sends_the_part_only_for_the_same_bytes(
    http: httpx.AsyncClient, clock: Clock, emulator: Emulator
) -> None:
    url = await finished_file(http, clock, "emulator/video-thumbnail", "video")
    whole = await http.get(url)
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    part = await http.get(url, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert part.status_code == 206
    assert part.content == whole.content[1000:]
    assert part.headers["etag"] == etag
    dated = await http.get(url, headers={"Range": "bytes=1000-", "If-Range": modified})
    assert dated.status_code == 206
    for stale in ('"other"', "W/" + etag, "Mon, 01 Jan 2024 00:00:00 GMT"):
        full = await http.get(url, headers={"Range": "bytes=1000-", "If-Range": stale})
        assert full.status_code == 200
        assert full.content == whole.content
    clock.now += 10
    emulator.update(output_salt="restarted")
    resumed = await http.get(url, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert resumed.status_code == 200  # never a splice of two different files
    assert "content-range" not in resumed.headers
    assert resumed.headers["etag"] != etag


async def test_range_forms_rfc_9110(http: httpx.AsyncClient, clock: Clock) -> None:
    url = await finished_file(http, clock, "emulator/video-thumbnail", "video")
    size = 200_000
    unsatisfiable = await http.get(url, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    assert (await http.get(url, headers={"Range": "bytes=-0"})).status_code == 416
    for ignored in ("bytes=10-5", "items=0-1", "bytes=0-1,5-6"):
        answer = await http.get(url, headers={"Range": ignored})
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(size)
    suffix = await http.get(url, headers={"Range": f"bytes=-{size * 2}"})
    assert suffix.status_code == 206
    assert suffix.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    stats = (await http.get("/_emulator/stats")).json()["downloads_by_status"]
    assert stats == {"200": 3, "206": 1, "416": 2}


async def test_uploads_carry_validators_too(http: httpx.AsyncClient) -> None:
    files = {"content": ("a.txt", b"hello world", "text/plain")}
    created = (await http.post("/v1/files", files=files)).json()
    answer = await http.get(f"/v1/files/{created['id']}/download")
    assert answer.headers["etag"].startswith('"')
    assert "last-modified" in answer.headers
