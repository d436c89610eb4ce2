"""Serve output files like a CDN: validators, Range and If-Range, and optional mid-body cuts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engine.emulator.stats import Stats

__all__ = ["ByteRangeResponse", "Chunks", "if_range_matches", "parse_range"]

Chunks = Callable[[int, int], Iterator[bytes]]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return ``(start, end)`` (end exclusive) for one ``Range`` spec, or None for all.

    As RFC 9110 (14.2) allows, a header we do not answer with a part (another unit, a
    malformed or inverted spec, several ranges) is ignored: the whole file is sent.
    Raises ``ValueError`` for a valid range that cannot be satisfied (the caller answers
    416): a start at or past the end, or an empty suffix.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        if int(last) == 0 or size == 0:
            raise ValueError(header)
        return max(0, size - int(last)), size
    if last != "" and int(last) < int(first):
        return None
    start = int(first)
    if start >= size:
        raise ValueError(header)
    return start, size if last == "" else min(size, int(last) + 1)


def if_range_matches(header: str | None, etag: str, last_modified: str) -> bool:
    """Return whether ``If-Range`` lets a ``Range`` apply (RFC 9110 13.1.5).

    An entity tag must match strongly (a weak one never does); a date must equal the
    ``Last-Modified`` exactly. No ``If-Range`` at all lets the range apply.
    """
    if header is None:
        return True
    value = header.strip()
    if value.startswith(('"', "W/")):
        return value == etag
    return value == last_modified


class ByteRangeResponse(Response):
    """Stream bytes ``[start, end)`` from ``chunks``; with ``cut`` stop halfway, unfinished.

    Stopping without the final message makes the server drop the connection, which the
    client sees as a body shorter than ``Content-Length`` (a real mid-download cut).
    """

    def __init__(
        self,
        chunks: Chunks,
        *,
        size: int,
        byte_range: tuple[int, int] | None,
        media_type: str,
        etag: str,
        last_modified: str,
        stats: Stats,
        cut: bool = False,
    ) -> None:
        super().__init__(status_code=206 if byte_range else 200, media_type=media_type)
        self.start, self.end = byte_range or (0, size)
        self.chunks, self.stats, self.cut = chunks, stats, cut
        self.headers["content-length"] = str(self.end - self.start)
        self.headers["etag"] = etag
        self.headers["last-modified"] = last_modified
        self.headers["accept-ranges"] = "bytes"
        self.headers["cache-control"] = "public,max-age=3600"
        if byte_range:
            self.headers["content-range"] = f"bytes {self.start}-{self.end - 1}/{size}"

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        """Send headers then the body in chunks, never holding more than one chunk."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        limit = self.start + (self.end - self.start) // 2 if self.cut else self.end
        for piece in self.chunks(self.start, limit):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            self.stats.bytes_served += len(piece)
        if self.cut:
            self.stats.downloads_cut += 1
            return
        await send({"type": "http.response.body", "body": b""})
