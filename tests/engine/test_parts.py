"""A part is resumed only when it provably is the start of the same file; never followed."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina

from engine._config import ApiConfig
from engine._download import Downloader
from engine._errors import DownloadError, TransportError
from tests.engine.test_download import CHUNK, FAST, VIDEO, output_urls, requests
from tests.support import sha256_of

pytestmark = pytest.mark.anyio

SIZE = 1024 * 1024


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=3):
        yield


@pytest.fixture
async def downloader(api: ApiConfig) -> AsyncIterator[Downloader]:
    async with Downloader(api, chunk_size=CHUNK, retry=FAST) as dl:
        yield dl


async def video_url(api: ApiConfig, server: Any, prompt: str) -> str:
    server.emulator.update(video_size=SIZE)
    [url] = await output_urls(api, VIDEO, {"prompt": prompt})
    return url


async def leave_part(downloader: Downloader, server: Any, url: str, dest: Path) -> int:
    """Play an earlier run cut mid-download: its part (and the part's record) stay."""
    server.emulator.update(cut_first_downloads=1)
    with stamina.set_testing(True, attempts=1), pytest.raises(TransportError):
        await downloader.fetch(url, dest)
    server.emulator.update(cut_first_downloads=0)
    return dest.with_name(dest.name + ".part").stat().st_size


async def test_a_part_of_bytes_since_changed_is_discarded_not_spliced(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    url = await video_url(api, server, "salted")
    dest = tmp_path / "out.mp4"
    await leave_part(downloader, server, url, dest)
    before = await downloader.fetch(url, tmp_path / "before.mp4")
    server.emulator.update(output_salt="new bytes")  # same URL, other bytes, other ETag

    result = await downloader.fetch(url, dest)
    fresh = await downloader.fetch(url, tmp_path / "fresh.mp4")

    assert result.sha256 == sha256_of(dest) == fresh.sha256 != before.sha256
    assert result.size == SIZE
    assert not dest.with_name("out.mp4.part").exists()
    assert not dest.with_name("out.mp4.part.meta").exists()


@pytest.mark.parametrize("record", ["missing", "other url", "garbage", "no validator"])
async def test_a_part_whose_source_is_not_proven_is_discarded(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path, record: str
) -> None:
    url = await video_url(api, server, "crafted")
    dest = tmp_path / "out.mp4"
    await leave_part(downloader, server, url, dest)
    part, meta = dest.with_name("out.mp4.part"), dest.with_name("out.mp4.part.meta")
    part.write_bytes(b"\0" * 200_000)  # bytes that are no prefix of the file
    saved = json.loads(meta.read_text())
    if record == "missing":
        meta.unlink()
    elif record == "other url":
        meta.write_text(json.dumps({**saved, "url_sha256": "0" * 64}))
    elif record == "garbage":
        meta.write_text("{not json")
    else:
        meta.write_text(json.dumps({**saved, "etag": None, "last_modified": None}))
    served = server.emulator.stats.bytes_served

    result = await downloader.fetch(url, dest)

    assert result.sha256 == sha256_of(dest)
    assert not dest.read_bytes().startswith(b"\0" * 1000)
    assert server.emulator.stats.bytes_served - served == SIZE  # fetched whole, no splice


async def test_a_proven_part_is_resumed_with_if_range(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    url = await video_url(api, server, "proven")
    dest = tmp_path / "out.mp4"
    kept = await leave_part(downloader, server, url, dest)
    served = server.emulator.stats.bytes_served

    result = await downloader.fetch(url, dest)

    assert server.emulator.stats.bytes_served - served == SIZE - kept
    fresh = await downloader.fetch(url, tmp_path / "fresh.mp4")
    assert result.sha256 == fresh.sha256 == sha256_of(dest)


@pytest.mark.parametrize("which", ["part", "part.meta", "output"])
async def test_a_symlink_is_never_followed(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path, which: str
) -> None:
    url = await video_url(api, server, "link")
    dest = tmp_path / "out.mp4"
    if which == "part.meta":
        await leave_part(downloader, server, url, dest)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    link = dest if which == "output" else dest.with_name(f"out.mp4.{which}")
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    asked = sum(requests(server).values())

    with pytest.raises(DownloadError, match="symlink") as caught:
        await downloader.fetch(url, dest)

    assert str(link) in str(caught.value)
    assert victim.read_bytes() == b"precious"
    assert link.is_symlink()
    assert sum(requests(server).values()) == asked  # refused before any byte is fetched


async def test_an_output_path_that_is_a_folder_is_refused(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path
) -> None:
    url = await video_url(api, server, "folder")
    dest = tmp_path / "out.mp4"
    dest.mkdir()
    with pytest.raises(DownloadError, match="not a regular file"):
        await downloader.fetch(url, dest)
    with pytest.raises(DownloadError, match="not a regular file"):
        await downloader.write_inline("text", dest)
    assert dest.is_dir()


async def test_inline_outputs_refuse_a_symlinked_part(
    downloader: Downloader, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    dest = tmp_path / "out.txt"
    dest.with_name("out.txt.part").symlink_to(victim)
    with pytest.raises(DownloadError, match="symlink"):
        await downloader.write_inline("hello", dest)
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("which", ["part", "output"])
async def test_a_fifo_is_refused_without_blocking(
    downloader: Downloader, api: ApiConfig, server: Any, tmp_path: Path, which: str
) -> None:
    # Opening a FIFO for writing would wait for a reader forever.
    url = await video_url(api, server, "fifo")
    dest = tmp_path / "out.mp4"
    os.mkfifo(dest if which == "output" else dest.with_name("out.mp4.part"))
    with anyio.fail_after(10), pytest.raises(DownloadError, match="not a regular file"):
        await downloader.fetch(url, dest)
    with anyio.fail_after(10), pytest.raises(DownloadError, match="not a regular file"):
        await downloader.write_inline("text", dest)
