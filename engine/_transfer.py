"""One download attempt's bytes in a worker thread, and the checks of each ranged answer.

Split from `engine._download` (issue 11): `Downloader` decides probe or transfer and
retries; `transfer` runs one blocking attempt (Range/If-Range resume, sha256 on the way,
fsync), `check_status`/`probe_total`/`plan` read what the server answered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx

from engine._deadline import StallWatch
from engine._errors import (
    DownloadError,
    IntegrityError,
    OutputExpiredError,
    RateLimitedError,
    ServerError,
    translate_httpx_error,
)
from engine._http import parse_content_range, parse_retry_after
from engine._logs import get_logger
from engine._parts import (
    PartSource,
    check_regular,
    discard_part,
    finish_part,
    open_part,
    part_path,
    start_part,
    storage_errors,
    write_part,
)
from engine._redact import redact
from jobs.model import OutputFile

__all__ = ["check_status", "hash_prefix", "plan", "probe_total", "transfer"]

log = get_logger("engine.download")

Progress = Callable[[int], None]


def transfer(
    url: str,
    dest: Path,
    label: str,
    source: list[PartSource],
    progress: Progress | None,
    *,
    client: httpx.Client,
    prefix: bytes = b"",
    stall_after: float | None,
    chunk_size: int,
) -> tuple[OutputFile, int]:
    """Run one attempt; return the file and the offset it resumed from (0 if none).

    ``prefix``, the file's first bytes read by `Downloader._probe`, starts a fresh part.
    """
    part = part_path(dest)
    safe = redact(url)
    if prefix:
        write_part(prefix, dest, safe, source[0] if source else None)
    with storage_errors(dest, part, safe):
        dest.parent.mkdir(parents=True, exist_ok=True)
        check_regular(part, safe)
        offset = part.stat().st_size if part.exists() else 0
    headers: dict[str, str] = {}
    validator = source[0].if_range if source else None
    if offset > 0 and (validator is not None or prefix):
        headers["Range"] = f"bytes={offset}-"
        # The representation must not have changed under our part: a server whose
        # file changed answers 200 with all of it (RFC 9110 If-Range). A prefix read
        # a moment ago in this attempt continues even without a validator.
        if validator is not None:
            headers["If-Range"] = validator
    elif offset > 0:
        offset = 0  # nothing proves the part is this file's start: fetch it whole
    try:
        with client.stream("GET", url, headers=headers) as response:
            check_status(response, safe, part)
            resume_at, total = plan(response, offset)
            with storage_errors(dest, part, safe):
                if resume_at and not source[0].matches(response.headers, total):
                    # A server that ignored If-Range: the part is another file's start.
                    discard_part(dest)
                    raise IntegrityError(
                        f"{label}: the file changed since its part was started; restarting",
                        url=safe,
                    )
                if not resume_at:
                    if offset:  # If-Range did not match: the server sent it all again
                        log.info("download.part_replaced", name=label, offset=offset)
                    source[:] = [PartSource.of(url, response.headers, total)]
                    start_part(dest, source[0], safe)
                digest = hashlib.sha256()
                if resume_at:
                    hash_prefix(part, resume_at, digest, chunk_size)
                size = resume_at
                stall = StallWatch(stall_after)
                # The part is exactly `resume_at` long: append; else start it afresh.
                flags = os.O_WRONLY | (os.O_APPEND if resume_at else os.O_CREAT | os.O_TRUNC)
                with os.fdopen(open_part(part, flags, safe), "ab" if resume_at else "wb") as out:
                    # httpcore's own reads (64 KiB): re-chunking them costs a third.
                    for chunk in response.iter_raw():
                        anyio.from_thread.check_cancelled()
                        stall.feed(len(chunk))
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            content_type = response.headers.get("content-type")
    except httpx.TransportError as exc:
        # The part keeps what arrived; the retry resumes from it.
        raise translate_httpx_error(exc, f"GET {safe}") from exc
    if total is not None and size != total:
        raise IntegrityError(
            f"{label}: received {size} bytes, expected {total}; the part is kept to resume",
            url=safe,
        )
    with storage_errors(dest, part, safe):
        finish_part(part, dest)
    result = OutputFile(
        name=label, size=size, sha256=digest.hexdigest(), url=url, content_type=content_type
    )
    return result, resume_at


def check_status(response: httpx.Response, safe: str, part: Path | None) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    if status in (404, 410):
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()
        raise OutputExpiredError(f"output gone (HTTP {status}): {safe}", url=safe)
    if status == 416:
        # The part is not a prefix of this file any more: start over next attempt.
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()
        raise IntegrityError(f"range not satisfiable for {safe}; restarting", url=safe)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after")) or 1.0
        raise RateLimitedError(detail=f"download throttled: {safe}", retry_after=retry_after)
    if status >= 500:
        raise ServerError(status, detail=f"download failed: {safe}")
    raise DownloadError(f"download refused (HTTP {status}): {safe}", url=safe)


def hash_prefix(part: Path, length: int, digest: hashlib._Hash, chunk_size: int) -> None:
    remaining = length
    with os.fdopen(open_part(part, os.O_RDONLY), "rb") as existing:
        while remaining > 0:
            chunk = existing.read(min(chunk_size, remaining))
            if not chunk:
                raise IntegrityError(f"{part.name} shrank while resuming")
            digest.update(chunk)
            remaining -= len(chunk)


def probe_total(response: httpx.Response) -> int | None:
    """Return the file's total size as the first ranged answer states it, or None.

    A ``*`` total is unknown: Content-Length then counts only the range.
    """
    if response.status_code == 206:
        stated = parse_content_range(response.headers.get("content-range"))
        if stated is None or stated.start != 0:
            raise IntegrityError("server answered a different range than asked; restarting")
        return stated.total
    length = response.headers.get("content-length")
    return int(length) if length else None


def plan(response: httpx.Response, offset: int) -> tuple[int, int | None]:
    """Return (where to start writing in the part, expected total size or None)."""
    length = response.headers.get("content-length")
    if response.status_code == 206:
        stated = parse_content_range(response.headers.get("content-range"))
        if stated is None or stated.start != offset:
            raise IntegrityError("server answered a different range than asked; restarting")
        if stated.total is not None:
            return offset, stated.total
        return offset, offset + int(length) if length else None
    # 200: the server ignored Range (or none was sent): write from the start.
    return 0, int(length) if length else None
