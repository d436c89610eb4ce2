"""The seed document's ``ReplicateClient``, built on the engine's own parts.

One client owns one set of parts for its whole life: a background event-loop thread
(started at the first call) on which one `Gateway` (one connection pool, one pair of
create/read budgets) and one `Downloader` live. Sync methods run there through a blocking
portal; async methods submit to it from the caller's loop without a thread per call, and
cancelling the caller cancels the call. So ``asyncio.gather`` over ``run_model_async``
and threads calling ``run_model`` all share the 600/min create budget and the pool.
`close()`, ``with`` and ``async with`` release everything; a client still open at
interpreter exit is closed then.

Environment (read when the client is built, never at import):
``REPLICATE_API_TOKEN`` (else ``REPLICATE_API_KEY``), ``REPLICATE_BASE_URL``,
``SSL_CERT_FILE``, ``REPLICATE_MAX_RETRIES`` (default 3), ``REPLICATE_TIMEOUT``
(default 600 s, the longest `wait_for_prediction` waits when given no timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.to_thread
import httpx
from anyio.from_thread import BlockingPortal

from engine._config import ApiConfig, EngineConfig
from engine._download import Downloader
from engine._errors import (
    ConfigError,
    EngineError,
    ModelError,
    PredictionCanceledError,
    PredictionMayExistError,
    PredictionTimeoutError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from engine._gateway import Gateway, PredictionPage, StreamEvent
from engine._http import ssl_context
from engine._limits import Limits
from engine._logs import get_logger
from engine._prediction import Prediction, PredictionStatus
from engine._reconcile import find_created_prediction
from engine._retry import RetryPolicy, is_permanent_failure
from engine._sse import read_events
from jobs import ModelRef, input_digest

__all__ = ["ReplicateClient", "get_replicate_client", "reset_replicate_client"]

log = get_logger("engine.client")
T = TypeVar("T")

_POLL_INTERVAL = 0.5
_DEFAULT_MAX_RETRIES = 3
_DEFAULT_TIMEOUT = 600.0
_REMEMBERED = 10_000
_END = object()  # what `_anext` returns at the end of an async iterator


@dataclass(frozen=True, slots=True)
class _Settings:
    api: ApiConfig
    max_retries: int
    timeout: float
    poll_interval: float
    create_rate: float = 600.0
    read_rate: float = 3000.0

    @property
    def engine(self) -> EngineConfig:
        """Return the engine settings the gateway and downloader are built from."""
        return EngineConfig(
            api=self.api,
            call_attempts=self.max_retries + 1,
            create_rate=self.create_rate,
            read_rate=self.read_rate,
        )


class _Runtime:
    """A client's long-lived parts: one loop thread; on it, one Gateway and one Downloader.

    Holds no reference to the client, so a client can be collected (and this closed by
    its finalizer, which also runs at interpreter exit). The thread is a daemon: Python
    joins non-daemon threads *before* atexit handlers run, so a pooled thread (anyio's
    ``start_blocking_portal``) would hang the exit that is meant to close it.
    """

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        # Loop-side state, touched only on the loop thread.
        self._stack: AsyncExitStack | None = None
        self._opening: anyio.Lock | None = None
        self._gateway: Gateway | None = None
        self._downloader: Downloader | None = None
        # Ids this client created (newest last, bounded): a lost create's look-up must
        # not mistake an earlier run of the same input for it.
        self.created: dict[str, None] = {}

    def remember(self, prediction_id: str) -> None:
        """Record a prediction this client created (called on the loop)."""
        self.created[prediction_id] = None
        if len(self.created) > _REMEMBERED:
            del self.created[next(iter(self.created))]

    def portal(self) -> BlockingPortal:
        """Return the portal to the client's loop, starting the loop on first use."""
        with self._lock:
            if self._portal is None:
                self._portal, self._thread = self._start()
            return self._portal

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
                        config.api, Limits.from_config(config), RetryPolicy.from_config(config)
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


async def _anext(events: AsyncIterator[T]) -> T | object:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return _END


class ReplicateClient:
    """Run Replicate models with retries, typed errors, verified downloads and logs.

    ``api_token`` falls back to ``REPLICATE_API_TOKEN`` then ``REPLICATE_API_KEY``; a
    missing token is reported at the first call, naming both variables. ``create_rate``
    and ``read_rate`` are the account's limits in requests per minute (Replicate's
    600 and 3000 by default); every call of this client shares them.
    """

    def __init__(
        self,
        api_token: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        *,
        base_url: str | None = None,
        poll_interval: float = _POLL_INTERVAL,
        create_rate: float = 600.0,
        read_rate: float = 3000.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        if create_rate <= 0 or read_rate <= 0:
            raise ConfigError("create_rate and read_rate must be positive requests per minute")
        self._settings = _Settings(
            api=ApiConfig.from_env(env, token=api_token, base_url=base_url),
            max_retries=_int_setting(
                max_retries, env, "REPLICATE_MAX_RETRIES", _DEFAULT_MAX_RETRIES
            ),
            timeout=_float_setting(timeout, env, "REPLICATE_TIMEOUT", _DEFAULT_TIMEOUT),
            poll_interval=poll_interval,
            create_rate=create_rate,
            read_rate=read_rate,
        )
        self._runtime = _Runtime(self._settings)
        weakref.finalize(self, self._runtime.close_at_exit)

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"ReplicateClient(base_url={s.api.base_url!r}, max_retries={s.max_retries}, "
            f"timeout={s.timeout}, token={'set' if s.api.token else 'missing'})"
        )

    @property
    def max_retries(self) -> int:
        """Return how many times a failed call is retried."""
        return self._settings.max_retries

    @property
    def timeout(self) -> float:
        """Return the default wait limit for a prediction, in seconds."""
        return self._settings.timeout

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the loop thread, the connection pool and the budgets.

        Calls still running are cancelled. A closed client starts fresh parts if it is
        used again.
        """
        self._runtime.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.close)

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the client's loop and wait for it (sync methods)."""
        return self._runtime.portal().call(func, *args)

    async def _submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the client's loop and await it from the caller's loop.

        Under asyncio no thread is used; cancelling the caller cancels the call on the
        client's loop. Other event loops (trio) wait in a worker thread.
        """
        future = self._runtime.portal().start_task_soon(func, *args)
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
            return await asyncio.wrap_future(future)
        finally:
            if not future.done():
                future.cancel()

    def _file_client(self) -> Any:
        """Return a replicate client used only to read `FileOutput`s, as users expect."""
        from replicate.client import Client  # noqa: PLC0415 - only when file outputs are asked for

        s = self._settings
        token = s.api.token.reveal() if s.api.token else None
        # Our CA bundle, and no kept-alive connections: a FileOutput outlives any place
        # that could close this client, so pooled sockets would leak until GC.
        return Client(api_token=token, base_url=s.api.base_url, transport=_FileTransport(s.api))

    async def _create(
        self, gateway: Gateway, ref: ModelRef, input: Mapping[str, Any], **params: Any
    ) -> Prediction:
        """Create once, finding a prediction whose answer was lost instead of paying twice.

        A 5xx or a connection cut after sending may hide a stored prediction: the list
        is searched (model, input digest, creation window) before creating again. When
        the list cannot be read, `PredictionMayExistError` says so and identifies it.
        """
        digest = input_digest(input)
        first_sent: float | None = None
        error: EngineError | None = None
        for _ in range(self.max_retries + 1):
            sent_at = time.time()
            try:
                prediction = await gateway.create(ref, input, **params)
            except (ServerError, TransportError) as exc:
                if isinstance(exc, TransportError) and not exc.sent:
                    raise  # provably never arrived; the gateway already retried it
                first_sent = first_sent or sent_at
                error = exc
            else:
                self._runtime.remember(prediction.id)
                return prediction
            try:
                found = await find_created_prediction(gateway, ref, digest, first_sent)
            except EngineError as lookup:
                log.warning("client.create_unknown", model=str(ref), error=str(lookup))
                raise PredictionMayExistError(str(ref), digest, first_sent, str(error)) from error
            # The newest match is the lost create's, unless it is one we already had:
            # then the lost one was never stored.
            if found is not None and found not in self._runtime.created:
                log.info("client.create_found", model=str(ref), prediction_id=found)
                self._runtime.remember(found)
                return await gateway.get(found)
            log.info("client.create_not_stored", model=str(ref), error=str(error))
        assert error is not None
        raise error

    # -- run -----------------------------------------------------------------------------

    def run_model(
        self,
        model_id: str,
        input_params: Mapping[str, Any] | None = None,
        use_file_output: bool = True,
    ) -> Any:
        """Run a model and return its output: `FileOutput`s, or URLs with ``use_file_output=False``.

        Raise `ModelError` when the prediction fails, `PredictionCanceledError` when it is
        canceled, `PredictionTimeoutError` past ``timeout``.
        """
        return self._call(self._run_model, model_id, input_params, use_file_output)

    async def run_model_async(
        self,
        model_id: str,
        input_params: Mapping[str, Any] | None = None,
        use_file_output: bool = True,
    ) -> Any:
        """Run a model without blocking the event loop; see `run_model`."""
        return await self._submit(self._run_model, model_id, input_params, use_file_output)

    async def _run_model(
        self, model_id: str, input_params: Mapping[str, Any] | None, use_file_output: bool
    ) -> Any:
        started = time.monotonic()
        ref = ModelRef.parse(model_id)
        gateway = await self._runtime.gateway()
        prediction = await self._create(gateway, ref, dict(input_params or {}))
        log.info("client.created", model=model_id, prediction_id=prediction.id)
        done = await _wait(gateway, prediction, self.timeout, self._settings.poll_interval)
        log.info(
            "client.run_model",
            model=model_id,
            prediction_id=done.id,
            status=str(done.status),
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        if not use_file_output:
            return done.output
        from replicate.helpers import transform_output  # noqa: PLC0415

        return transform_output(done.output, self._file_client())

    # -- predictions ---------------------------------------------------------------------

    def create_prediction(
        self,
        model_id: str,
        version_id: str | None = None,
        input_params: Mapping[str, Any] | None = None,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        stream: bool = False,
    ) -> Prediction:
        """Start a prediction in the background and return it at once."""
        return self._call(
            self._create_prediction,
            model_id,
            version_id,
            input_params,
            webhook,
            webhook_events_filter,
            stream,
        )

    async def create_prediction_async(
        self,
        model_id: str,
        version_id: str | None = None,
        input_params: Mapping[str, Any] | None = None,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        stream: bool = False,
    ) -> Prediction:
        """Start a prediction without blocking the event loop; see `create_prediction`."""
        return await self._submit(
            self._create_prediction,
            model_id,
            version_id,
            input_params,
            webhook,
            webhook_events_filter,
            stream,
        )

    async def _create_prediction(
        self,
        model_id: str,
        version_id: str | None,
        input_params: Mapping[str, Any] | None,
        webhook: str | None,
        webhook_events_filter: Sequence[str] | None,
        stream: bool,
    ) -> Prediction:
        ref = ModelRef.parse(model_id)
        if version_id:
            ref = replace(ref, version=version_id)
        # The seed's own example filters on "failed", which Replicate does not know:
        # "completed" already covers every terminal state.
        events = _webhook_events(webhook_events_filter)
        gateway = await self._runtime.gateway()
        prediction = await self._create(
            gateway,
            ref,
            dict(input_params or {}),
            webhook=webhook,
            webhook_events_filter=events,
            stream=stream,
        )
        log.info("client.create_prediction", model=model_id, prediction_id=prediction.id)
        return prediction

    def wait_for_prediction(
        self, prediction: Prediction | str, timeout: float | None = None
    ) -> Prediction:
        """Wait until the prediction ends; return it when it succeeded.

        Raise `PredictionTimeoutError` (a `TimeoutError`, carrying the prediction as last
        seen) past ``timeout`` seconds, `ModelError` when it failed,
        `PredictionCanceledError` when it was canceled.
        """
        return self._call(self._wait_for_prediction, prediction, timeout)

    async def wait_for_prediction_async(
        self, prediction: Prediction | str, timeout: float | None = None
    ) -> Prediction:
        """Wait without blocking the event loop; see `wait_for_prediction`."""
        return await self._submit(self._wait_for_prediction, prediction, timeout)

    async def _wait_for_prediction(
        self, prediction: Prediction | str, timeout: float | None
    ) -> Prediction:
        gateway = await self._runtime.gateway()
        current = await gateway.get(_id(prediction))
        limit = self.timeout if timeout is None else timeout
        return await _wait(gateway, current, limit, self._settings.poll_interval)

    def get_prediction(self, prediction: Prediction | str) -> Prediction:
        """Return the current state of a prediction."""
        return self._call(self._get_prediction, prediction)

    async def get_prediction_async(self, prediction: Prediction | str) -> Prediction:
        """Return the current state of a prediction without blocking the loop."""
        return await self._submit(self._get_prediction, prediction)

    async def _get_prediction(self, prediction: Prediction | str) -> Prediction:
        return await (await self._runtime.gateway()).get(_id(prediction))

    def list_predictions(self, limit: int = 20, cursor: str | None = None) -> PredictionPage:
        """Return up to ``limit`` of your predictions, newest first, reading as many pages
        as that takes; pass ``page.next`` as ``cursor`` for the ones after them."""
        return self._call(self._list_predictions, limit, cursor)

    async def list_predictions_async(
        self, limit: int = 20, cursor: str | None = None
    ) -> PredictionPage:
        """List predictions without blocking the event loop; see `list_predictions`."""
        return await self._submit(self._list_predictions, limit, cursor)

    async def _list_predictions(self, limit: int, cursor: str | None) -> PredictionPage:
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        gateway = await self._runtime.gateway()
        results: list[Prediction] = []
        page_cursor, skip = _split_cursor(cursor)
        while True:
            page = await gateway.list(page_cursor)
            items = page.results[skip:]
            wanted = limit - len(results)
            if len(items) > wanted:
                # Stop inside this page: the next call starts where this one stopped.
                results.extend(items[:wanted])
                return PredictionPage(results, _join_cursor(page_cursor, skip + wanted))
            results.extend(items)
            if page.next is None or len(results) == limit:
                return PredictionPage(results, page.next)
            page_cursor, skip = page.next, 0

    def cancel_prediction(self, prediction: Prediction | str) -> Prediction:
        """Cancel a running prediction and return it (status ``canceled``)."""
        return self._call(self._cancel_prediction, prediction)

    async def cancel_prediction_async(self, prediction: Prediction | str) -> Prediction:
        """Cancel without blocking the event loop; see `cancel_prediction`."""
        return await self._submit(self._cancel_prediction, prediction)

    async def _cancel_prediction(self, prediction: Prediction | str) -> Prediction:
        canceled = await (await self._runtime.gateway()).cancel(_id(prediction))
        log.info("client.cancel_prediction", prediction_id=canceled.id, status=str(canceled.status))
        return canceled

    # -- streaming -----------------------------------------------------------------------

    def stream_output(
        self, model_id: str, input_params: Mapping[str, Any] | None = None
    ) -> Iterator[StreamEvent]:
        """Yield server-sent events (``str(event)`` is the text of an output event).

        Models and deployments (``deployments/owner/name``) alike. A stream that drops
        before ``done`` is resumed after the last event seen (``Last-Event-ID``), else
        completed from the prediction's final state; each event is yielded once. When
        neither works, `TransportError` is raised: a stream never ends silently.
        """
        portal = self._runtime.portal()
        events = self._stream(model_id, input_params)
        try:
            while (event := portal.call(_anext, events)) is not _END:
                yield event  # type: ignore[misc]
        finally:
            self._runtime.close_soon(events)

    async def stream_output_async(
        self, model_id: str, input_params: Mapping[str, Any] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield server-sent events without blocking the event loop; see `stream_output`."""
        events = self._stream(model_id, input_params)
        try:
            while (event := await self._submit(_anext, events)) is not _END:
                yield event  # type: ignore[misc]
        finally:
            self._runtime.close_soon(events)

    async def _stream(
        self, model_id: str, input_params: Mapping[str, Any] | None
    ) -> AsyncGenerator[StreamEvent, None]:
        ref = ModelRef.parse(model_id)
        gateway = await self._runtime.gateway()
        prediction = await self._create(gateway, ref, dict(input_params or {}), stream=True)
        url = prediction.urls.get("stream")
        if not url:
            raise UnexpectedResponseError(
                f"{model_id} does not stream: prediction {prediction.id} has no stream URL"
            )
        log.info("client.stream", model=model_id, prediction_id=prediction.id)
        last_id: str | None = None
        counts = {"output": 0, "logs": 0}
        reason = ""
        for _ in range(self.max_retries + 1):
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with gateway.http.stream("GET", url, headers=headers) as response:
                    kind = response.headers.get("content-type", "").split(";")[0].strip()
                    if response.status_code != 200 or kind != "text/event-stream":
                        reason = f"HTTP {response.status_code} {kind}"
                        break  # refused: resuming will not help, the final state may
                    async for event in read_events(response):
                        last_id = event.id or last_id
                        if event.event in counts:
                            counts[event.event] += 1
                        yield event
                        if event.event == "done":
                            return
                reason = "the stream ended before done"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            log.warning(
                "client.stream_dropped",
                prediction_id=prediction.id,
                last_event_id=last_id,
                reason=reason,
            )
        async for event in self._stream_rest(gateway, prediction, counts, reason):
            yield event

    async def _stream_rest(
        self, gateway: Gateway, prediction: Prediction, counts: Mapping[str, int], reason: str
    ) -> AsyncIterator[StreamEvent]:
        """Yield what a dropped stream missed, from the prediction's final state."""
        try:
            final = await _settle(gateway, prediction, self.timeout, self._settings.poll_interval)
        except EngineError as exc:
            raise TransportError(
                f"the event stream of prediction {prediction.id} dropped ({reason}) after "
                f"{sum(counts.values())} events, and its final state could not be read: {exc}",
                sent=True,
            ) from exc
        log.info("client.stream_completed_from_state", prediction_id=final.id)
        for line in (final.logs or "").splitlines()[counts["logs"] :]:
            yield StreamEvent(event="logs", data=line, id="")
        output = final.output
        items = output if isinstance(output, list) else ([] if output is None else [output])
        for item in items[counts["output"] :]:
            yield StreamEvent(event="output", data=str(item), id="")
        if final.status is PredictionStatus.FAILED:
            yield StreamEvent(event="error", data=json.dumps({"detail": final.error}), id="")
            yield StreamEvent(event="done", data=json.dumps({"reason": "error"}), id="")
        elif final.status is PredictionStatus.SUCCEEDED:
            yield StreamEvent(event="done", data="{}", id="")
        else:
            yield StreamEvent(event="done", data=json.dumps({"reason": "canceled"}), id="")

    # -- downloads -----------------------------------------------------------------------

    def download_output(self, output: Any, save_path: str | os.PathLike[str]) -> str | list[str]:
        """Save an output (`FileOutput`, URL, ``data:`` URI, or a list of them) to disk.

        Streams through ``save_path.part``, verifies the size, then renames; creates
        parent folders. Return the absolute path, or one path per item of a list
        (``name_0.ext``, ``name_1.ext``...).
        """
        return self._call(self._download_output, output, save_path)

    async def download_output_async(
        self, output: Any, save_path: str | os.PathLike[str]
    ) -> str | list[str]:
        """Download without blocking the event loop; see `download_output`."""
        return await self._submit(self._download_output, output, save_path)

    async def _download_output(
        self, output: Any, save_path: str | os.PathLike[str]
    ) -> str | list[str]:
        target = Path(os.path.abspath(os.path.expanduser(save_path)))  # noqa: PTH100,PTH111 - no I/O
        downloader = await self._runtime.downloader()
        if isinstance(output, list | tuple):
            paths = []
            for n, item in enumerate(output):
                dest = target.with_name(f"{target.stem}_{n}{target.suffix}")
                await downloader.fetch(_url(item), dest)
                paths.append(str(dest))
            return paths
        await downloader.fetch(_url(output), target)
        log.info("client.download_output", path=str(target))
        return str(target)


class _FileTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Serve `FileOutput` reads (sync and async) over the API's TLS settings, unpooled."""

    def __init__(self, api: ApiConfig) -> None:
        context = ssl_context(api.ca_file)
        limits = httpx.Limits(max_keepalive_connections=0)
        self._sync = httpx.HTTPTransport(verify=context, limits=limits)
        self._async = httpx.AsyncHTTPTransport(verify=context, limits=limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._sync.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._async.handle_async_request(request)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


async def _settle(
    gateway: Gateway, prediction: Prediction, timeout: float, poll_interval: float
) -> Prediction:
    """Poll until the prediction is terminal; `PredictionTimeoutError` past ``timeout``."""
    current = prediction
    deadline = time.monotonic() + timeout
    while not current.status.terminal:
        if time.monotonic() >= deadline:
            raise PredictionTimeoutError(
                current,
                f"prediction {current.id} still {current.status} after {timeout:g} s "
                "(it may still run: see the error's .prediction)",
            )
        await anyio.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
        current = await gateway.get(current.id)
    return current


async def _wait(
    gateway: Gateway, prediction: Prediction, timeout: float, poll_interval: float
) -> Prediction:
    current = await _settle(gateway, prediction, timeout, poll_interval)
    if current.status is PredictionStatus.FAILED:
        raise ModelError(current, permanent=is_permanent_failure(current.error))
    if current.status in (PredictionStatus.CANCELED, PredictionStatus.ABORTED):
        raise PredictionCanceledError(current, f"prediction {current.id} was {current.status}")
    return current


def _webhook_events(events: Sequence[str] | None) -> list[str] | None:
    if events is None:
        return None
    known = ("start", "output", "logs", "completed")
    mapped = {"completed" if e in ("failed", "succeeded", "canceled") else e for e in events}
    unknown = mapped - set(known)
    if unknown:
        raise ConfigError(f"unknown webhook events {sorted(unknown)}; known: {', '.join(known)}")
    return [e for e in known if e in mapped]


def _id(prediction: Prediction | str) -> str:
    return prediction if isinstance(prediction, str) else prediction.id


def _url(item: Any) -> str:
    url = getattr(item, "url", item)
    if not isinstance(url, str):
        raise TypeError(f"cannot download {type(item).__name__}: expected a FileOutput or URL")
    return url


def _split_cursor(cursor: str | None) -> tuple[str | None, int]:
    """Split our cursor into the API's cursor and how many of its page were already given.

    A limit can stop inside a page; the count rides in the URL fragment, which is never
    sent to the server (``#skip=N``; alone, it means the first page).
    """
    if not cursor or "#skip=" not in cursor:
        return cursor, 0
    base, _, skip = cursor.rpartition("#skip=")
    try:
        return base or None, max(0, int(skip))
    except ValueError:
        raise ConfigError(f"not a cursor from list_predictions: {cursor!r}") from None


def _join_cursor(cursor: str | None, skip: int) -> str:
    return f"{cursor or ''}#skip={skip}"


def _int_setting(value: int | None, env: Mapping[str, str], name: str, default: int) -> int:
    if value is not None:
        return value
    raw = env.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _float_setting(value: float | None, env: Mapping[str, str], name: str, default: float) -> float:
    if value is not None:
        return float(value)
    raw = env.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None


_singleton: ReplicateClient | None = None
_singleton_lock = threading.Lock()


def get_replicate_client() -> ReplicateClient:
    """Return the shared client, created on first use from the environment."""
    global _singleton  # noqa: PLW0603 - the seed's documented singleton
    with _singleton_lock:
        if _singleton is None:
            _singleton = ReplicateClient()
        return _singleton


def reset_replicate_client() -> None:
    """Close and forget the shared client; the next `get_replicate_client` reads the
    environment again.

    Use it in tests and after rotating the token.
    """
    global _singleton
    with _singleton_lock:
        old, _singleton = _singleton, None
    if old is not None:
        old.close()
