"""Store outputs durably: streamed, Range-resumed, verified, fsynced, atomically renamed.

A file is never visible under its final name until every byte is on disk: bytes stream
into ``name.part``, the size is checked against ``Content-Length``, the sha256 is computed
on the way, the file and then its directory are fsynced around an atomic ``os.replace``.
A cut transfer keeps its part, and the next attempt (or the next run) asks only for the
missing bytes with ``Range`` and ``If-Range``, when the part's recorded source (URL and
validators, `engine._parts`) proves it is the start of the same file; otherwise the
part is discarded. Memory stays at one chunk plus the first 256 KiB whatever
the file's size.

Every download starts with a ``Range`` request for its first 256 KiB on the event loop.
Most outputs (images, text) fit: they are done in that one request, with no worker thread
for the network. A larger file continues from that prefix in a worker thread. The
crossover is measured in bench/RESULTS.md. An asyncio TLS stream costs about 4.6 ms more
CPU per MB than a blocking one, and running the network in a thread costs about 1 ms of
GIL handoffs per file against a busy loop.

Disk errors: on ENOSPC the part is removed (a full disk should not stay full of parts, and
the other jobs of the run need the space); the download restarts from zero next time.
Read-only or permission errors leave nothing behind to remove. All three are
`StorageError` and are not retried.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiofiles.os
import anyio
import httpx

from engine._config import ApiConfig
from engine._deadline import attempt_deadline
from engine._durable import fill_and_commit
from engine._errors import translate_httpx_error
from engine._http import (
    TrustedHostAuth,
    async_transport,
    decode_data_uri,
    parse_content_range,
    ssl_context,
)
from engine._logs import get_logger
from engine._parts import (
    PartSource,
    check_regular,
    open_part,
    part_path,
    resumable_source,
    storage_errors,
    write_part,
)
from engine._redact import redact
from engine._retry import RetryPolicy, retry_download
from engine._transfer import check_status, probe_total, transfer
from jobs.model import OutputFile

__all__ = ["Downloader"]

log = get_logger("engine.download")

Progress = Callable[[int], None]

_PROBE_BYTES = 256 * 1024  # read on the event loop; the rest of a larger file in a thread
# Connections `engine._http.async_transport` keeps alive per client: probes at once.
_KEEP_ALIVE = 20


def _store_file(payload: bytes, part: Path, dest: Path, safe: str | None) -> None:
    """Write ``part`` (never through a symlink), fsync it, rename it to ``dest``, fsync the folder.

    Raise OSError when the disk refuses, `DownloadError` when ``dest`` or the part is not
    a regular file. A part opened here is removed again on any failure.
    """
    check_regular(dest, safe)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = open_part(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safe)
    fill_and_commit(fd, part, dest, payload)


_store_off_loop = aiofiles.os.wrap(_store_file)


class Downloader:
    """Own one HTTP client for output files; `fetch` them durably.

    The first 256 KiB of a file are read on the event loop with an `httpx.AsyncClient`.
    The rest of a larger file is read in a worker thread with a blocking `httpx.Client`.
    Over TLS that reads 2-3x faster than an asyncio stream, whose SSL transport copies
    every record in Python (see bench/RESULTS.md). A file that fits in the first read is
    written, fsynced and renamed in one trip to aiofiles' executor; a larger file is
    written, hashed and fsynced in its transfer's thread. ``threads`` bounds the worker
    threads in use at once. A cancelled task stops its transfer at the next chunk.

    ``retry`` bounds the attempts of one file (network errors, 5xx, 429, short bodies); a
    retry resumes from the part with ``Range`` when the server allows it. ``chunk_size``
    is the read size when a part is hashed again before resuming; the network is read in
    httpcore's own 64 KiB reads (re-chunking them cost a third of the throughput).
    """

    def __init__(
        self,
        api: ApiConfig,
        *,
        chunk_size: int = 256 * 1024,
        retry: RetryPolicy | None = None,
        threads: int = 16,
    ) -> None:
        self.api = api
        self.chunk_size = chunk_size
        self.retry = retry or RetryPolicy()
        self.retries: Counter[str] = Counter()  # retried download errors, by class
        self._threads = anyio.CapacityLimiter(threads)
        self._stores = anyio.Semaphore(threads)
        self._probes = anyio.Semaphore(_KEEP_ALIVE)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        token = self.api.token.reveal() if self.api.token else None
        options: dict[str, Any] = {
            "verify": ssl_context(self.api.ca_file),
            # No single read outlasts the attempt's deadline; `StallWatch` bounds a trickle.
            "timeout": httpx.Timeout(
                min(self.api.timeout, self.api.attempt_timeout or self.api.timeout),
                connect=min(10.0, self.api.attempt_timeout or 10.0),
                pool=None,
            ),
            "auth": TrustedHostAuth(token, self.api.base_url),
            "follow_redirects": True,
            "trust_env": False,
            # Bytes on disk must be the file itself, and Content-Length must count them.
            "headers": {"Accept-Encoding": "identity"},
        }
        self._client = httpx.Client(**options)
        self._aclient = httpx.AsyncClient(
            **options, transport=async_transport(verify=options["verify"])
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        aclient, self._aclient = self._aclient, None
        if client is not None:
            client.close()  # no transfer is running: each one is awaited by its task
        if aclient is not None:
            await aclient.aclose()

    async def fetch(
        self,
        url: str,
        dest: Path,
        *,
        progress: Progress | None = None,
        name: str | None = None,
    ) -> OutputFile:
        """Download ``url`` to ``dest`` durably; return it verified, with its sha256.

        ``name`` is what `OutputFile.name` records (a path relative to the output folder);
        it defaults to ``dest.name``. ``progress`` receives the size of each chunk received;
        it is called on the event loop for the first 256 KiB and from the transfer's
        worker thread after that, so it must be quick and thread-safe (appending to a list
        or adding to a counter is).
        """
        start = time.perf_counter()
        label = name or dest.name
        if url.startswith("data:"):
            payload, content_type = decode_data_uri(url)
            result = await self._store_bytes(payload, dest, label, content_type)
        else:
            result = await self._fetch_retrying(url, dest, label, progress)
        # Debug: at info, the job's own "done" line says it, once per job instead of per file.
        log.debug(
            "download.completed",
            name=result.name,
            size=result.size,
            duration_ms=round((time.perf_counter() - start) * 1000, 1),
        )
        return result

    async def _fetch_retrying(
        self, url: str, dest: Path, label: str, progress: Progress | None
    ) -> OutputFile:
        if self._client is None:
            raise RuntimeError("Downloader is not open: use 'async with Downloader(...)'")
        safe = redact(url)
        check_regular(dest, safe)
        # The source of the bytes in the part: recorded by an earlier run, else set by the
        # first answer of this one. A part whose source cannot be proven is discarded.
        source: list[PartSource] = []
        found = resumable_source(dest, url, safe)
        if found is not None:
            source.append(found)
        async for attempt in self.retry.retrying(retry_download, self.retries):
            with attempt:
                prefix = b""
                if not part_path(dest).exists():  # a part to resume goes to a thread
                    # As many probes at once as connections kept alive: a sweep hands over
                    # completions a page at a time, and a burst beyond the pool would pay a
                    # TLS handshake per file (measured: the lag p95 at 1,000 in flight).
                    async with self._probes:
                        prefix, total, content_type = await self._probe(url, dest, source, progress)
                    if len(prefix) == total:
                        return await self._store_bytes(prefix, dest, label, content_type, url)
                attempt_once = partial(
                    transfer,
                    client=self._client,
                    prefix=prefix,
                    stall_after=self.api.attempt_timeout,
                    chunk_size=self.chunk_size,
                )
                result, resumed_at = await anyio.to_thread.run_sync(
                    attempt_once, url, dest, label, source, progress, limiter=self._threads
                )
                if resumed_at > len(prefix):
                    log.info("download.resumed", name=label, offset=resumed_at, size=result.size)
                return result
        raise AssertionError("unreachable: stamina either returns or raises")

    async def _probe(
        self, url: str, dest: Path, source: list[PartSource], progress: Progress | None
    ) -> tuple[bytes, int | None, str | None]:
        """Read the file's first 256 KiB on the event loop: (bytes, total size, type).

        The whole file when it is that small (the answer's total says so). A server that
        ignores ``Range`` answers 200: its first 256 KiB are just as good a prefix. A cut
        answer leaves what arrived in the part, like a cut transfer does.
        """
        assert self._aclient is not None
        safe = redact(url)
        headers = {"Range": f"bytes=0-{_PROBE_BYTES - 1}"}
        received: list[bytes] = []
        size = 0
        seconds = self.api.attempt_timeout
        try:
            # Headers and the first 256 KiB within one attempt's deadline: a server that
            # never sends the first byte, or trickles it, is cut and retried.
            with anyio.fail_after(seconds):
                async with self._aclient.stream("GET", url, headers=headers) as response:
                    if response.status_code == 416:
                        # Nothing at byte 0: an empty file, or a server that will not do ranges
                        # (then the transfer asks again without Range).
                        stated = parse_content_range(response.headers.get("content-range"))
                        empty = stated is not None and stated.start is None and stated.total == 0
                        return b"", 0 if empty else None, None
                    check_status(response, safe, None)
                    total = probe_total(response)
                    source[:] = [PartSource.of(url, response.headers, total)]
                    async for chunk in response.aiter_raw():
                        received.append(chunk)
                        size += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                        if size >= _PROBE_BYTES:
                            break  # a 200 to a server that ignored Range: the rest in a thread
                    else:
                        if total is None and size < _PROBE_BYTES:
                            total = size  # the body ended before the range did: that is the file
                    content_type = response.headers.get("content-type")
        except (httpx.TransportError, TimeoutError) as exc:
            if received and source:
                start = partial(write_part, b"".join(received), dest, safe, source[0])
                await anyio.to_thread.run_sync(start, limiter=self._threads)
            cause = exc
            if isinstance(exc, TimeoutError):
                cause = attempt_deadline(seconds or 0.0, f"GET {safe}", sent=True)
            assert isinstance(cause, httpx.TransportError)
            raise translate_httpx_error(cause, f"GET {safe}") from exc
        return b"".join(received), total, content_type

    async def write_inline(
        self, content: str | bytes, dest: Path, *, name: str | None = None
    ) -> OutputFile:
        """Store a text or JSON output through the same part -> fsync -> rename path."""
        payload = content.encode() if isinstance(content, str) else content
        return await self._store_bytes(payload, dest, name or dest.name, None)

    async def _store_bytes(
        self,
        payload: bytes,
        dest: Path,
        label: str,
        content_type: str | None,
        url: str | None = None,
    ) -> OutputFile:
        """Store a payload held in memory durably, never blocking the event loop on the disk.

        A small output (256 KiB at most from the network; ``data:`` URIs and text outputs
        are rarely larger) is written, fsynced and renamed in one trip to aiofiles'
        executor, so a slow disk or a network file system stalls a thread instead of the
        loop. One trip, not one per call (open, write, close through aiofiles' file
        object, then fsync and rename): each system call a thread makes trades the GIL
        with the busy loop, and four trips per file measured 1.09x the engine's CPU.
        Large transfers keep writing in their own transfer thread (`_transfer.transfer`): there
        the bytes already are in a thread, and a trip per 64 KiB chunk would cost more
        than the write itself.
        """
        part = part_path(dest)
        safe = redact(url) if url else None
        # Bounded like the threads, so that waiting stores do not pile up open files.
        async with self._stores:
            with storage_errors(dest, part, safe):
                # Milliseconds of work: shielded, so a cancelled task never races its own
                # thread between the part and the rename.
                with anyio.CancelScope(shield=True):
                    await _store_off_loop(payload, part, dest, safe)
        return OutputFile(
            name=label,
            size=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            url=url,
            content_type=content_type,
        )
