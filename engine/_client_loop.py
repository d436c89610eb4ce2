"""Run a `ReplicateClient`'s calls on its own event-loop thread, where its parts live.

One client owns one set of parts for its whole life: a background event-loop thread
(started at the first call) on which one `Gateway` (one connection pool, one pair of
create/read budgets) and one `Downloader` live. Sync methods run there through a blocking
portal (`Runtime.call`); async methods submit to it from the caller's loop without a
thread per call (`Runtime.submit`), and cancelling the caller cancels the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
from anyio.from_thread import BlockingPortal

from engine._client_env import Settings
from engine._download import Downloader
from engine._gateway import Gateway
from engine._limits import Limits
from engine._logs import get_logger
from engine._retry import RetryPolicy

__all__ = ["END", "Runtime", "next_or_end"]

log = get_logger("engine.client")
T = TypeVar("T")

END = object()  # what `next_or_end` returns at the end of an async iterator


async def next_or_end(events: AsyncIterator[T]) -> T | object:
    """Return the next item of ``events``, or `END` when there is none."""
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return END


# The seed's batch pattern gathers hundreds of calls at once, then waits: with httpx's
# default 20 kept alive, each burst past 20 closed its connections and the next burst
# paid a TLS handshake per call again (up to 333 handshakes for 200 calls under load).
_POOL = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0)


class Runtime:
    """A client's long-lived parts: one loop thread; on it, one Gateway and one Downloader.

    Holds no reference to the client, so a client can be collected (and this closed by
    its finalizer, which also runs at interpreter exit). The thread is a daemon: Python
    joins non-daemon threads *before* atexit handlers run, so a pooled thread (anyio's
    ``start_blocking_portal``) would hang the exit that is meant to close it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        # Loop-side state, touched only on the loop thread.
        self._stack: AsyncExitStack | None = None
        self._opening: anyio.Lock | None = None
        self._gateway: Gateway | None = None
        self._downloader: Downloader | None = None

    def portal(self) -> BlockingPortal:
        """Return the portal to the client's loop, starting the loop on first use."""
        with self._lock:
            if self._portal is None:
                self._portal, self._thread = self._start()
            return self._portal

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the client's loop and wait for it (sync methods)."""
        return self.portal().call(func, *args)

    async def submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the client's loop and await it from the caller's loop.

        Under asyncio no thread is used; cancelling the caller cancels the call on the
        client's loop. Other event loops (trio) wait in a worker thread.
        """
        future = self.portal().start_task_soon(func, *args)
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
            return await asyncio.wrap_future(future)
        finally:
            if not future.done():
                future.cancel()

    def _start(self) -> tuple[BlockingPortal, threading.Thread]:
        ready: Future[BlockingPortal] = Future()

        def run() -> None:
            try:
                anyio.run(self._main, ready)
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                if not ready.done():
                    ready.set_exception(exc)

        thread = threading.Thread(target=run, name="replicate-client", daemon=True)
        thread.start()
        return ready.result(), thread

    async def _main(self, ready: Future[BlockingPortal]) -> None:
        # The stack closes after the portal, whose exit ends every call still running.
        async with AsyncExitStack() as stack, BlockingPortal() as portal:
            self._stack, self._opening = stack, anyio.Lock()
            ready.set_result(portal)
            await portal.sleep_until_stopped()
        self._gateway = self._downloader = None
        log.debug("client.closed")

    async def gateway(self) -> Gateway:
        """Return the client's gateway (on the loop), opening it at first use."""
        if self._gateway is None:
            assert self._opening is not None
            assert self._stack is not None
            async with self._opening:
                if self._gateway is None:
                    config = self._settings.engine
                    config.api.require_token(how="ReplicateClient(api_token=...)")
                    gateway = Gateway(
                        config.api,
                        Limits.from_config(config),
                        RetryPolicy.from_config(config),
                        pool=_POOL,
                    )
                    self._gateway = await self._stack.enter_async_context(gateway)
        return self._gateway

    async def downloader(self) -> Downloader:
        """Return the client's downloader (on the loop), opening it at first use."""
        if self._downloader is None:
            assert self._opening is not None
            assert self._stack is not None
            async with self._opening:
                if self._downloader is None:
                    config = self._settings.engine
                    downloader = Downloader(config.api, retry=RetryPolicy.from_config(config))
                    self._downloader = await self._stack.enter_async_context(downloader)
        return self._downloader

    def close_soon(self, events: AsyncGenerator[Any, None]) -> None:
        """Close an async generator living on the loop, without waiting for it."""
        portal = self._portal
        if portal is not None:
            # A stopped loop raises RuntimeError: the generator went with it.
            with contextlib.suppress(RuntimeError):
                portal.start_task_soon(events.aclose)

    def close_at_exit(self) -> None:
        """Close for a collected client or at interpreter exit; never raise there."""
        with contextlib.suppress(RuntimeError):  # collected on its own loop: it ends with it
            self.close()

    def close(self) -> None:
        """Stop the loop: calls still running are cancelled, pool and files closed."""
        with self._lock:
            portal, thread = self._portal, self._thread
            self._portal = self._thread = None
        if portal is None or thread is None:
            return
        if threading.get_ident() == thread.ident:
            raise RuntimeError("a ReplicateClient cannot be closed from its own event loop")
        with contextlib.suppress(RuntimeError):  # the loop already ended
            portal.call(portal.stop, True)  # noqa: FBT003 - cancel_remaining, positional only
        thread.join()
