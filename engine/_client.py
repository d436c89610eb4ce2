"""Run Replicate models through the seed document's ``ReplicateClient`` (the public API).

Sync methods and their ``_async`` twins share one client's parts: its own event-loop
thread (`engine._client_loop`) with one `Gateway` and one `Downloader`. So
``asyncio.gather`` over ``run_model_async`` and threads calling ``run_model`` all share
the 600/min create budget and the pool. `close()`, ``with`` and ``async with`` release
everything; a client still open at interpreter exit is closed then. Settings come from
the arguments, else the environment (`engine._client_env`); `get_replicate_client` is
the seed's shared instance.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread

from engine import _client_calls as calls
from engine._client_env import POLL_INTERVAL, read_settings
from engine._client_files import download_output, file_client
from engine._client_loop import END, Runtime, next_or_end
from engine._client_stream import stream_events
from engine._config import SETTLE_SECONDS
from engine._errors import ConfigError
from engine._gateway import Gateway, PredictionPage, StreamEvent
from engine._logs import get_logger
from engine._prediction import Prediction
from jobs import ModelRef

__all__ = ["ReplicateClient", "get_replicate_client", "reset_replicate_client"]

log = get_logger("engine.client")


class ReplicateClient:
    """Run Replicate models with retries, typed errors, verified downloads and logs.

    ``api_token`` falls back to ``REPLICATE_API_TOKEN`` then ``REPLICATE_API_KEY``; a
    missing token is reported at the first call, naming both variables. ``create_rate``
    and ``read_rate`` are the account's limits in requests per minute (Replicate's
    600 and 3000 by default); every call of this client shares them. ``settle``: seconds
    after sending a create whose answer was lost before its absence from the prediction
    list (which can lag) is believed and it is sent again (`engine._reconcile`).
    """

    def __init__(
        self,
        api_token: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        *,
        base_url: str | None = None,
        poll_interval: float = POLL_INTERVAL,
        create_rate: float = 600.0,
        read_rate: float = 3000.0,
        environ: Mapping[str, str] | None = None,
        settle: float = SETTLE_SECONDS,
    ) -> None:
        self._settings = read_settings(
            os.environ if environ is None else environ,
            api_token=api_token,
            base_url=base_url,
            max_retries=max_retries,
            timeout=timeout,
            poll_interval=poll_interval,
            create_rate=create_rate,
            read_rate=read_rate,
            settle=settle,
        )
        self._runtime = Runtime(self._settings)
        self._created = calls.CreatedIds()
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

    @property
    def _attempts(self) -> int:
        return self._settings.max_retries + 1

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
        return self._runtime.call(self._run_model, model_id, input_params, use_file_output)

    async def run_model_async(
        self,
        model_id: str,
        input_params: Mapping[str, Any] | None = None,
        use_file_output: bool = True,
    ) -> Any:
        """Run a model without blocking the event loop; see `run_model`."""
        return await self._runtime.submit(self._run_model, model_id, input_params, use_file_output)

    async def _create(
        self,
        gateway: Gateway,
        ref: ModelRef,
        input_params: Mapping[str, Any] | None,
        **params: Any,
    ) -> Prediction:
        """The client's one create: a lost answer is looked for, never paid twice."""
        return await calls.create(
            gateway,
            self._created,
            ref,
            dict(input_params or {}),
            attempts=self._attempts,
            settle=self._settings.settle,
            **params,
        )

    async def _run_model(
        self, model_id: str, input_params: Mapping[str, Any] | None, use_file_output: bool
    ) -> Any:
        started = time.monotonic()
        ref = ModelRef.parse(model_id)
        gateway = await self._runtime.gateway()
        prediction = await self._create(gateway, ref, input_params)
        log.info("client.created", model=model_id, prediction_id=prediction.id)
        done = await calls.wait(gateway, prediction, self.timeout, self._settings.poll_interval)
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

        return transform_output(done.output, file_client(self._settings.api))

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
        return self._runtime.call(
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
        return await self._runtime.submit(
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
        events = calls.webhook_events(webhook_events_filter)
        gateway = await self._runtime.gateway()
        prediction = await self._create(
            gateway,
            ref,
            input_params,
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
        return self._runtime.call(self._wait_for_prediction, prediction, timeout)

    async def wait_for_prediction_async(
        self, prediction: Prediction | str, timeout: float | None = None
    ) -> Prediction:
        """Wait without blocking the event loop; see `wait_for_prediction`."""
        return await self._runtime.submit(self._wait_for_prediction, prediction, timeout)

    async def _wait_for_prediction(
        self, prediction: Prediction | str, timeout: float | None
    ) -> Prediction:
        gateway = await self._runtime.gateway()
        current = await gateway.get(calls.prediction_id(prediction))
        limit = self.timeout if timeout is None else timeout
        return await calls.wait(gateway, current, limit, self._settings.poll_interval)

    def get_prediction(self, prediction: Prediction | str) -> Prediction:
        """Return the current state of a prediction."""
        return self._runtime.call(self._get_prediction, prediction)

    async def get_prediction_async(self, prediction: Prediction | str) -> Prediction:
        """Return the current state of a prediction without blocking the loop."""
        return await self._runtime.submit(self._get_prediction, prediction)

    async def _get_prediction(self, prediction: Prediction | str) -> Prediction:
        return await (await self._runtime.gateway()).get(calls.prediction_id(prediction))

    def list_predictions(self, limit: int = 20, cursor: str | None = None) -> PredictionPage:
        """Return up to ``limit`` of your predictions, newest first, reading as many pages
        as that takes; pass ``page.next`` as ``cursor`` for the ones after them."""
        return self._runtime.call(self._list_predictions, limit, cursor)

    async def list_predictions_async(
        self, limit: int = 20, cursor: str | None = None
    ) -> PredictionPage:
        """List predictions without blocking the event loop; see `list_predictions`."""
        return await self._runtime.submit(self._list_predictions, limit, cursor)

    async def _list_predictions(self, limit: int, cursor: str | None) -> PredictionPage:
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        return await calls.list_predictions(await self._runtime.gateway(), limit, cursor)

    def cancel_prediction(self, prediction: Prediction | str) -> Prediction:
        """Cancel a running prediction and return it (status ``canceled``)."""
        return self._runtime.call(self._cancel_prediction, prediction)

    async def cancel_prediction_async(self, prediction: Prediction | str) -> Prediction:
        """Cancel without blocking the event loop; see `cancel_prediction`."""
        return await self._runtime.submit(self._cancel_prediction, prediction)

    async def _cancel_prediction(self, prediction: Prediction | str) -> Prediction:
        canceled = await (await self._runtime.gateway()).cancel(calls.prediction_id(prediction))
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
        events = stream_events(self._runtime, self._created, self._settings, model_id, input_params)
        try:
            while (event := portal.call(next_or_end, events)) is not END:
                yield event  # type: ignore[misc]
        finally:
            self._runtime.close_soon(events)

    async def stream_output_async(
        self, model_id: str, input_params: Mapping[str, Any] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield server-sent events without blocking the event loop; see `stream_output`."""
        events = stream_events(self._runtime, self._created, self._settings, model_id, input_params)
        try:
            while (event := await self._runtime.submit(next_or_end, events)) is not END:
                yield event  # type: ignore[misc]
        finally:
            self._runtime.close_soon(events)

    # -- downloads -----------------------------------------------------------------------

    def download_output(self, output: Any, save_path: str | os.PathLike[str]) -> str | list[str]:
        """Save an output (`FileOutput`, URL, ``data:`` URI, or a list of them) to disk.

        Streams through ``save_path.part``, verifies the size, then renames; creates
        parent folders. Return the absolute path, or one path per item of a list
        (``name_0.ext``, ``name_1.ext``...).
        """
        return self._runtime.call(self._download_output, output, save_path)

    async def download_output_async(
        self, output: Any, save_path: str | os.PathLike[str]
    ) -> str | list[str]:
        """Download without blocking the event loop; see `download_output`."""
        return await self._runtime.submit(self._download_output, output, save_path)

    async def _download_output(
        self, output: Any, save_path: str | os.PathLike[str]
    ) -> str | list[str]:
        return await download_output(await self._runtime.downloader(), output, save_path)


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
