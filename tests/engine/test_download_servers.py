"""Downloads from servers that answer ranges unlike the emulator (and unlike most CDNs)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from engine import ApiConfig, Secret
from engine._download import Downloader
from engine._retry import RetryPolicy
from tests.support import tls_server

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 2000  # 512,000 bytes: more than the first ranged read
FAST = RetryPolicy(attempts=3, timeout=30, wait_initial=0.001, wait_max=0.01)


def respond(status: str, body: bytes = b"", **headers: str) -> bytes:
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status}\r\n{head}Connection: close\r\n\r\n".encode() + body


def asked(headers: dict[str, str]) -> tuple[int, int]:
    """Return (start, end exclusive) of the request's Range over BODY."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", "bytes=0-"))
    assert match is not None
    start, last = int(match[1]), match[2]
    return start, len(BODY) if not last else min(len(BODY), int(last) + 1)


def ranged(headers: dict[str, str], total: str, **extra: str) -> bytes:
    """Answer the request's Range over BODY with a 206 stating ``total`` as the size."""
    start, end = asked(headers)
    return respond(
        "206 Partial Content",
        BODY[start:end],
        Content_Length=str(end - start),
        Content_Range=f"bytes {start}-{end - 1}/{total}",
        **extra,
    )


async def fetch(tmp_path: Path, url: str) -> tuple[Path, str]:
    api = ApiConfig(
        token=Secret("r8_test"), base_url="https://api.invalid", ca_file=tmp_path / "ca.pem"
    )
    dest = tmp_path / "out.bin"
    async with Downloader(api, retry=FAST) as downloader:
        result = await downloader.fetch(f"{url}/file.bin", dest)
    assert result.size == dest.stat().st_size
    assert result.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert not dest.with_name("out.bin.part").exists()
    return dest, result.sha256


async def test_a_server_that_ignores_range_still_yields_the_whole_file(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def answer(_line: str, headers: dict[str, str]) -> bytes:
        seen.append(headers.get("range"))
        return respond("200 OK", BODY, Content_Length=str(len(BODY)))

    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        dest, _ = await fetch(tmp_path, url)
    assert dest.read_bytes() == BODY
    assert len(seen) == 2  # the first read, then the whole file again (Range ignored)


async def test_an_unknown_total_is_not_taken_for_the_end_of_the_file(tmp_path: Path) -> None:
    def answer(_line: str, headers: dict[str, str]) -> bytes:
        return ranged(headers, "*")

    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        dest, _ = await fetch(tmp_path, url)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize(("content_range", "requests"), [("bytes */0", 1), (None, 2)])
async def test_an_empty_file_is_stored_empty(
    tmp_path: Path, content_range: str | None, requests: int
) -> None:
    seen: list[str | None] = []

    def answer(_line: str, headers: dict[str, str]) -> bytes:
        seen.append(headers.get("range"))
        if "range" in headers:  # nothing at byte 0 of an empty file
            extra = {"Content_Range": content_range} if content_range else {}
            return respond("416 Range Not Satisfiable", Content_Length="0", **extra)
        return respond("200 OK", Content_Length="0")

    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        dest, digest = await fetch(tmp_path, url)
    assert dest.read_bytes() == b""
    assert digest == hashlib.sha256(b"").hexdigest()
    assert len(seen) == requests


async def test_a_small_body_without_length_is_done_in_one_request(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def answer(_line: str, headers: dict[str, str]) -> bytes:
        seen.append(headers.get("range"))
        return respond("200 OK", b"5\r\nhello\r\n0\r\n\r\n", Transfer_Encoding="chunked")

    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        dest, _ = await fetch(tmp_path, url)
    assert dest.read_bytes() == b"hello"
    assert len(seen) == 1


async def test_a_weak_etag_is_not_sent_as_if_range(tmp_path: Path) -> None:
    # RFC 9110: If-Range needs a strong validator; with a weak one the server must resend
    # the whole file, so the continuation after the first read would fetch it twice.
    seen: list[dict[str, str]] = []

    def answer(_line: str, headers: dict[str, str]) -> bytes:
        seen.append(headers)
        return ranged(headers, str(len(BODY)), ETag='W/"v1"')

    with tls_server(tmp_path / "ca.pem", answer) as (url, _):
        dest, _ = await fetch(tmp_path, url)
    assert dest.read_bytes() == BODY
    assert [h.get("range") for h in seen] == ["bytes=0-262143", "bytes=262144-"]
    assert "if-range" not in seen[1]
