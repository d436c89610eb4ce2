"""The downloader against the emulator over HTTPS: verified, resumed, atomic, token-safe."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import subprocess
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import stamina

from engine._config import ApiConfig
from engine._download import Downloader
from engine._errors import OutputExpiredError, StorageError, TransportError
from engine._gateway import Gateway
from engine._http import TrustedHostAuth
from engine._limits import Budget, Limits
from engine._retry import RetryPolicy
from jobs.model import ModelRef
from tests.support import sha256_of

pytestmark = pytest.mark.anyio

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")
VIDEO = ModelRef.parse("kling-ai/kling-video")
FAST = RetryPolicy(attempts=3, timeout=30, wait_initial=0.001, wait_max=0.01)
CHUNK = 64 * 1024


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


@pytest.fixture
async def downloader(api: ApiConfig) -> AsyncIterator[Downloader]:
    async with Downloader(api, chunk_size=CHUNK, retry=FAST) as dl:
        yield dl


async def output_urls(api: ApiConfig, ref: ModelRef, input: dict[str, Any]) -> list[str]:
    """Run one prediction on the emulator and return its output URLs."""
    limits = Limits(create=Budget("create", 60_000), read=Budget("read", 60_000))
    async with Gateway(api, limits, FAST) as gateway:
        prediction = await gateway.create(ref, input)
        with anyio.fail_after(10):
            while not prediction.status.terminal:
                await anyio.sleep(0.01)
                prediction = await gateway.get(prediction.id)
    output = prediction.output
    return output if isinstance(output, list) else [output]


def requests(server: Any) -> dict[str, int]:
    counts: dict[str, int] = server.emulator.stats.snapshot()["requests"]
    return counts


async def test_png_lands_verified_and_atomically(
    downloader: Downloader, api: ApiConfig, tmp_path: Path
) -> None:
    [url] = await output_urls(api, FLUX, {"prompt": "fox", "output_format": "png"})
    dest = tmp_path / "deep" / "er" / "fox.png"
    result = await downloader.fetch(url, dest)
    assert dest.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert result.name == "fox.png"
    assert result.size == dest.stat().st_size
    assert result.sha256 == sha256_of(dest)
    assert result.url == url
    assert result.content_type == "image/png"
    assert not dest.with_name("fox.png.part").exists()


async def test_large_video_streams_with_flat_memory(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    size = 16 * 1024 * 1024
    server.emulator.update(video_size=size)
    [url] = await output_urls(api, VIDEO, {"prompt": "waves"})
    seen: list[int] = []
    dest = tmp_path / "waves.mp4"
    tracemalloc.start()
    try:
        result = await downloader.fetch(url, dest, progress=seen.append, name="videos/waves.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == size == dest.stat().st_size == sum(seen)
    assert result.sha256 == sha256_of(dest)
    assert result.name == "videos/waves.mp4"
    assert peak < 6 * 1024 * 1024, f"peak {peak} bytes for a {size}-byte file"


async def test_cut_downloads_resume_with_range_and_nothing_is_served_twice(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    size = 3 * 1024 * 1024
    server.emulator.update(video_size=size)
    [url] = await output_urls(api, VIDEO, {"prompt": "cut"})
    # Cut both the first 256 KiB read on the loop and the transfer of the rest.
    server.emulator.update(cut_first_downloads=2)
    dest = tmp_path / "cut.mp4"
    result = await downloader.fetch(url, dest)
    stats = server.emulator.stats.snapshot()
    assert stats["downloads_cut"] == 2
    assert requests(server).get("outputs.get 206") == 3  # each retry asked for the rest
    assert result.size == size == dest.stat().st_size
    assert result.sha256 == sha256_of(dest)
    assert stats["bytes_served"] == size  # every byte that arrived was kept
    assert downloader.retries["TransportError"] == 2


async def test_a_small_output_takes_one_request(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    [url] = await output_urls(api, FLUX, {"prompt": "one"})
    dest = tmp_path / "one.png"
    result = await downloader.fetch(url, dest)
    assert requests(server).get("outputs.get 206") == 1
    assert not any(k.startswith("outputs.get 200") for k in requests(server))
    assert dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.size == dest.stat().st_size
    assert result.sha256 == sha256_of(dest)
    assert not (tmp_path / "one.png.part").exists()


async def test_a_part_left_by_an_earlier_run_is_resumed(
    api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    server.emulator.update(video_size=1024 * 1024)
    [url] = await output_urls(api, VIDEO, {"prompt": "again"})
    dest = tmp_path / "again.mp4"
    server.emulator.update(cut_first_downloads=1)
    async with Downloader(api, chunk_size=CHUNK, retry=FAST) as earlier:
        with stamina.set_testing(True, attempts=1), pytest.raises(TransportError):
            await earlier.fetch(url, dest)  # the earlier run: cut, its part kept
    kept = dest.with_name("again.mp4.part").stat().st_size
    assert 0 < kept < 1024 * 1024
    asked, served = requests(server)["outputs.get 206"], server.emulator.stats.bytes_served

    async with Downloader(api, chunk_size=CHUNK, retry=FAST) as later:
        again = await later.fetch(url, dest)

    assert again.size == 1024 * 1024
    assert again.sha256 == sha256_of(dest)
    assert requests(server)["outputs.get 206"] == asked + 1  # one request, for the rest
    assert server.emulator.stats.bytes_served - served == again.size - kept
    assert not dest.with_name("again.mp4.part.meta").exists()


async def test_expired_output_is_output_expired(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    [url] = await output_urls(api, FLUX, {"prompt": "old"})
    server.emulator.update(output_expiry=0.0)
    dest = tmp_path / "old.webp"
    with pytest.raises(OutputExpiredError) as caught:
        await downloader.fetch(url, dest)
    assert caught.value.url is not None
    assert not dest.exists()
    assert not dest.with_name("old.webp.part").exists()


async def test_data_uris_take_the_same_durable_path(downloader: Downloader, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 10
    b64 = "data:application/octet-stream;base64," + base64.b64encode(payload).decode()
    result = await downloader.fetch(b64, tmp_path / "blob.bin")
    assert (tmp_path / "blob.bin").read_bytes() == payload
    assert result.sha256 == hashlib.sha256(payload).hexdigest()
    assert result.content_type == "application/octet-stream"

    text = await downloader.fetch("data:text/plain,hello%20world%21", tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == "hello world!"
    assert text.size == 12
    assert not list(tmp_path.glob("*.part"))


async def test_inline_outputs_are_written_atomically(
    downloader: Downloader, tmp_path: Path
) -> None:
    result = await downloader.write_inline('{"answer": 42}', tmp_path / "out" / "a.json")
    assert (tmp_path / "out" / "a.json").read_text() == '{"answer": 42}'
    assert result.size == 14
    assert result.sha256 == sha256_of(tmp_path / "out" / "a.json")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a 64 KiB tmpfs (the suite runs as root): a real ENOSPC, on regular files.

    A symlink to /dev/full would be simpler, but the downloader rightly refuses to write
    through a symlink. Fails, never skips, where mounting is not allowed.
    """
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


async def test_a_full_disk_is_a_storage_error_and_frees_the_part(
    downloader: Downloader, api: ApiConfig, full_disk: Path
) -> None:
    [url] = await output_urls(api, FLUX, {"prompt": "full"})
    dest = full_disk / "full.webp"
    (full_disk / "filler").write_bytes(b"x" * 60 * 1024)  # leave less than one output
    with pytest.raises(StorageError, match="No space left"):
        await downloader.fetch(url, dest)
    assert not dest.with_name("full.webp.part").exists()  # freed so the run can go on
    assert not dest.with_name("full.webp.part.meta").exists()
    assert not dest.exists()

    with pytest.raises(StorageError):
        await downloader.write_inline("text" * 4096, dest)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_a_read_only_folder_is_a_storage_error(
    downloader: Downloader, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StorageError):
            await downloader.write_inline("text", locked / "a.txt")
    finally:
        locked.chmod(0o700)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []  # noqa: RUF012 - shared with the test through the class

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = b"foreign bytes"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign_host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_token_never_goes_to_a_foreign_host(
    downloader: Downloader, foreign_host: str, tmp_path: Path
) -> None:
    _Recorder.seen = []
    result = await downloader.fetch(f"{foreign_host}/file.bin", tmp_path / "file.bin")
    assert result.size == len(b"foreign bytes")
    assert _Recorder.seen == [None]


def test_only_the_api_origin_and_replicate_delivery_are_trusted() -> None:
    auth = TrustedHostAuth("r8_x", "https://api.replicate.com")
    trusted = [
        "https://api.replicate.com/v1/files/x",
        "https://replicate.delivery/pbxt/x.png",
        "https://pbxt.replicate.delivery/x.png",
    ]
    foreign = [
        "http://api.replicate.com/v1/files/x",  # other scheme
        "https://api.replicate.com:8443/x",  # other port
        "https://replicate.delivery.evil.example/x.png",
        "https://evilreplicate.delivery/x.png",
        "https://example.com/x.png",
    ]
    assert all(auth.trusted(httpx.URL(u)) for u in trusted)
    assert not any(auth.trusted(httpx.URL(u)) for u in foreign)


async def test_a_cancelled_transfer_stops_keeps_its_part_and_resumes_later(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    size = 32 * 1024 * 1024
    server.emulator.update(video_size=size)
    [url] = await output_urls(api, VIDEO, {"prompt": "long"})
    dest = tmp_path / "long.mp4"
    seen: list[int] = []

    with anyio.fail_after(10), anyio.CancelScope() as scope:

        def cancel_after_first_megabyte(n: int) -> None:
            seen.append(n)
            if sum(seen) >= 1024 * 1024 and not scope.cancel_called:
                anyio.from_thread.run_sync(scope.cancel)  # from the transfer's thread

        await downloader.fetch(url, dest, progress=cancel_after_first_megabyte)

    assert scope.cancelled_caught
    part = dest.with_name("long.mp4.part")
    assert not dest.exists()
    kept = part.stat().st_size
    assert 1024 * 1024 <= kept < size  # stopped early, bytes kept
    asked = requests(server)["outputs.get 206"]

    result = await downloader.fetch(url, dest)

    assert result.size == size == dest.stat().st_size
    assert result.sha256 == sha256_of(dest)
    assert requests(server)["outputs.get 206"] == asked + 1  # only the rest was asked for
