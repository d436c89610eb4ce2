# httpcore's stream interface takes timeouts as arguments; they are passed through.
# ruff: noqa: ASYNC109
"""HTTP plumbing the gateway and the downloader share: TLS, the transport, header parsing.

`ssl_context` builds the one TLS context; `parse_retry_after` and `parse_content_range`
read the two headers both sides act on; `decode_data_uri` reads a ``data:`` URL;
`TrustedHostAuth` sends the token only where it belongs. `async_transport` is an httpx
transport whose check of idle connections costs one poll each.

On every request, httpcore asks each idle connection of the pool whether the server has
closed it (``get_extra_info("is_readable")``). Through anyio's TLS stream, that lookup
builds the stream's whole table of typed attributes, which calls ``getpeername`` along
the way, before the one ``poll`` that answers. In bench/overhead.py this was a fifth of
the event loop's CPU. The same lookup over a socket found once per connection costs
just the ``poll``.

The streams and their errors are still httpcore's own (`httpcore.AnyIOBackend`). Only
this one question is answered differently, with the same meaning: a readable idle socket
was closed by the server.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import math
import re
import select
import socket
import ssl
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

import anyio
import httpcore
import httpx
import sniffio

from engine._errors import ConfigError, DownloadError
from engine._redact import redact

__all__ = [
    "ContentRange",
    "TrustedHostAuth",
    "async_library_known",
    "async_transport",
    "decode_data_uri",
    "parse_content_range",
    "parse_retry_after",
    "ssl_context",
]

_DELIVERY_SUFFIX = ".replicate.delivery"
_DATA_URI = re.compile(r"^data:(?P<type>[^,;]*)(?P<params>(?:;[^,;]*)*?),(?P<data>.*)$", re.DOTALL)
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """Return the TLS context for the API and downloads: ``ca_file`` or the default bundle.

    The environment (``SSL_CERT_FILE``) was read at the edge into ``ApiConfig.ca_file``.
    """
    if ca_file is not None:
        try:
            return ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the CA bundle {ca_file} (SSL_CERT_FILE): {exc.strerror or exc}"
            ) from exc
    return httpx.create_ssl_context(trust_env=False)


def parse_retry_after(value: str | None) -> float | None:
    """Return a ``Retry-After`` value (seconds or an HTTP date) in seconds, or None."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


class ContentRange(NamedTuple):
    """A ``Content-Range`` header: ``start``/``end`` None for ``bytes */total``."""

    start: int | None
    end: int | None
    total: int | None  # None: ``*``, unknown


def parse_content_range(value: str | None) -> ContentRange | None:
    """Return the parsed ``Content-Range`` header, or None when it is absent or malformed."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    start, end, total = match.groups()
    return ContentRange(
        None if start is None else int(start),
        None if end is None else int(end),
        None if total == "*" else int(total),
    )


def async_transport(
    *, verify: ssl.SSLContext, limits: httpx.Limits | None = None
) -> httpx.AsyncHTTPTransport:
    """Return an `httpx.AsyncHTTPTransport` (HTTP/1.1, no proxy) on the cheaper backend."""
    limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
    # httpx has no parameter for httpcore's network backend: give the transport the pool
    # it would have built, on ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_Backend(),
    )
    return transport


@contextmanager
def async_library_known() -> Iterator[None]:
    """Name the running async library once, for this task and the tasks it starts.

    httpcore and anyio ask sniffio for it on every lock, event and cancel scope. Under
    ``anyio.run`` the answer is a context variable. Under ``asyncio.run``, sniffio looks
    up the current task each time: a tenth of the event loop's CPU in bench/overhead.py.
    Setting the variable, as ``anyio.run`` does, makes every later question a lookup.
    """
    if sniffio.current_async_library_cvar.get() is not None:
        yield
        return
    token = sniffio.current_async_library_cvar.set(sniffio.current_async_library())
    try:
        yield
    finally:
        sniffio.current_async_library_cvar.reset(token)


def decode_data_uri(url: str) -> tuple[bytes, str | None]:
    """Return a ``data:`` URI's bytes and media type; raise `DownloadError` if malformed."""
    match = _DATA_URI.match(url)
    if match is None:
        raise DownloadError("malformed data: URI", url=redact(url))
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    data = match["data"]
    try:
        if "base64" in params:
            payload = base64.b64decode(unquote_to_bytes(data), validate=False)
        else:
            payload = unquote_to_bytes(data)
    except (binascii.Error, ValueError) as exc:
        raise DownloadError(f"undecodable data: URI: {exc}", url=redact(url)) from exc
    return payload, match["type"] or "text/plain"


class TrustedHostAuth(httpx.Auth):
    """Send the token only to the API's own origin and to Replicate's delivery hosts.

    httpx drops ``Authorization`` itself when a redirect leaves the origin.
    """

    def __init__(self, token: str | None, api_url: str) -> None:
        self._token = token
        api = httpx.URL(api_url)
        self._api_origin = (api.scheme, api.host, api.port)

    def trusted(self, url: httpx.URL) -> bool:
        if (url.scheme, url.host, url.port) == self._api_origin:
            return True
        return url.scheme == "https" and (
            url.host == "replicate.delivery" or url.host.endswith(_DELIVERY_SUFFIX)
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token and self.trusted(request.url):
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class _Readable:
    """Tell whether a socket would not block a read (data, EOF or error): not idle.

    One poll object per connection, registered once: the check runs for every idle
    connection on every request, so it is one ``poll(0)`` call.
    """

    __slots__ = ("_poll", "_socket")

    def __init__(self, sock: socket.socket | None) -> None:
        self._socket = sock
        self._poll: Any = None
        fd = -1 if sock is None else sock.fileno()
        if fd >= 0 and hasattr(select, "poll"):  # no poll() on Windows
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def __call__(self) -> bool:
        sock = self._socket
        if sock is None or sock.fileno() < 0:
            return True  # closed: as good as readable, the next read returns EOF
        if self._poll is None:  # pragma: no cover - Windows
            return bool(select.select([sock], [], [], 0)[0])
        return bool(self._poll.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's stream, with the socket looked up once instead of per question."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._readable = _Readable(inner.get_extra_info("socket"))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))
        except BaseException as exc:
            # httpcore closes the TCP stream when a handshake fails with an Exception,
            # not when it is cancelled (an overall attempt deadline that passed
            # mid-handshake, a run stopping on a 401 while other creates connect): the
            # socket would be left to the garbage collector.
            if not isinstance(exc, Exception):
                with anyio.CancelScope(shield=True):
                    await self._inner.aclose()
            raise

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._readable()
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
