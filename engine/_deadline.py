"""Give every HTTP attempt an overall deadline: connect, TLS, sending, first byte, body.

httpx's timeouts are per operation: a server that accepts TCP and never finishes the TLS
handshake trips the connect timeout, but one that trickles a byte every few seconds, or
reads a create and never answers, can hold a call for as long as it likes. Here one
attempt gets ``seconds`` in total (`DeadlineTransport`), and a download must move
``STALL_BYTES`` every ``seconds`` once its headers arrived (`StallWatch`).

A deadline that passes is raised as an httpx timeout so that the mapping into our tree
(`engine._errors.translate_httpx_error`) decides whether the request may have been sent:
``ConnectTimeout`` when httpcore's trace shows the request's headers never started to
leave (safe to send again, even a create), ``ReadTimeout`` otherwise (a create may have
been stored: the worker looks for it in the prediction list before paying again).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx

__all__ = ["STALL_BYTES", "DeadlineTransport", "StallWatch", "attempt_deadline"]

STALL_BYTES = 64 * 1024  # a download must move this much every deadline, or it is stalled

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


class _Sent:
    """An httpcore trace hook that notes when the request's headers start to leave."""

    __slots__ = ("_inner", "sent")

    def __init__(self, inner: Trace | None) -> None:
        self._inner = inner
        self.sent = False

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        if "send_request_headers" in name:
            self.sent = True
        if self._inner is not None:
            await self._inner(name, info)


def attempt_deadline(
    seconds: float, what: str, *, sent: bool, request: httpx.Request | None = None
) -> httpx.TimeoutException:
    """Return the httpx timeout that says an attempt outlived its overall deadline."""
    if sent:
        return httpx.ReadTimeout(
            f"{what}: no complete answer within {seconds:g} s", request=request
        )
    return httpx.ConnectTimeout(
        f"{what}: not connected (TCP and TLS) within {seconds:g} s", request=request
    )


class DeadlineTransport(httpx.AsyncBaseTransport):
    """Bound each request, answer included, by ``seconds`` (``None``: no bound).

    The body is read here, under the deadline, so that a trickling answer cannot outlive
    it; a ``text/event-stream`` (a prediction's stream) is the one exception: its headers
    are bounded, its events are not.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, seconds: float | None) -> None:
        self._inner = inner
        self._seconds = seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        seconds = self._seconds
        if seconds is None:
            return await self._inner.handle_async_request(request)
        sent = _Sent(request.extensions.get("trace"))
        request.extensions = {**request.extensions, "trace": sent}
        try:
            with anyio.fail_after(seconds):
                response = await self._inner.handle_async_request(request)
                if "event-stream" in response.headers.get("content-type", ""):
                    return response
                try:
                    raw = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            what = f"{request.method} {request.url.path}"
            raise attempt_deadline(seconds, what, sent=sent.sent, request=request) from exc
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=raw,
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class StallWatch:
    """Tell when a download has moved fewer than `STALL_BYTES` in ``seconds``.

    ``feed`` each chunk's size; it raises ``httpx.ReadTimeout`` once the window passed
    without enough bytes. It works from any thread (the large-file transfer runs in one);
    a read that blocks is bounded by httpx's own read timeout, the next chunk by this.
    """

    __slots__ = ("_moved", "_since", "request", "seconds")

    def __init__(self, seconds: float | None, request: httpx.Request | None = None) -> None:
        self.seconds = seconds
        self.request = request
        self._since = time.monotonic()
        self._moved = 0

    def feed(self, size: int) -> None:
        if self.seconds is None:
            return
        self._moved += size
        now = time.monotonic()
        if self._moved >= STALL_BYTES:
            self._since, self._moved = now, 0
        elif now - self._since > self.seconds:
            raise httpx.ReadTimeout(
                f"download stalled: under {STALL_BYTES // 1024} KiB in {self.seconds:g} s",
                request=self.request,
            )
