"""The seed document's ``ReplicateClient``, built on the engine's own parts.

Every call goes through the same `Gateway` (budgets, retry policy, error translation),
`Downloader` (streamed, verified, atomic files) and structlog events as a batch run.
Sync methods run their async twin on a short-lived event loop in a worker thread, so
they work from plain scripts and from inside a running loop (notebooks) alike.

Environment (read when the client is built, never at import):
``REPLICATE_API_TOKEN`` (else ``REPLICATE_API_KEY``), ``REPLICATE_BASE_URL``,
``SSL_CERT_FILE``, ``REPLICATE_MAX_RETRIES`` (default 3), ``REPLICATE_TIMEOUT``
(default 600 s, the longest `wait_for_prediction` waits when given no timeout).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import httpx
import structlog

from engine._config import ApiConfig, EngineConfig
from engine._download import Downloader
from engine._errors import (
    ConfigError,
    ModelError,
    PredictionCanceledError,
    PredictionTimeoutError,
)
from engine._gateway import Gateway, PredictionPage, StreamEvent
from engine._http import ssl_context
from engine._limits import Limits
from engine._prediction import Prediction, PredictionStatus
from engine._retry import RetryPolicy, is_permanent_failure
from jobs import ModelRef

__all__ = ["ReplicateClient", "get_replicate_client", "reset_replicate_client"]

log = structlog.get_logger("engine.client")
T = TypeVar("T")

_POLL_INTERVAL = 0.5
_DEFAULT_MAX_RETRIES = 3
_DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class _Settings:
    api: ApiConfig
    max_retries: int
    timeout: float
    poll_interval: float

    @property
    def engine(self) -> EngineConfig:
        """Return the engine settings the gateway and downloader are built from."""
        return EngineConfig(api=self.api, call_attempts=self.max_retries + 1)


class ReplicateClient:
    """Run Replicate models with retries, typed errors, verified downloads and logs.

    ``api_token`` falls back to ``REPLICATE_API_TOKEN`` then ``REPLICATE_API_KEY``; a
    missing token is reported at the first call, naming both variables.
    """

    def __init__(
        self,
        api_token: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        *,
        base_url: str | None = None,
        poll_interval: float = _POLL_INTERVAL,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._settings = _Settings(
            api=ApiConfig.from_env(env, token=api_token, base_url=base_url),
            max_retries=_int_setting(
                max_retries, env, "REPLICATE_MAX_RETRIES", _DEFAULT_MAX_RETRIES
            ),
            timeout=_float_setting(timeout, env, "REPLICATE_TIMEOUT", _DEFAULT_TIMEOUT),
            poll_interval=poll_interval,
        )

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

    # -- plumbing ------------------------------------------------------------------------

    @asynccontextmanager
    async def _gateway(self) -> AsyncIterator[Gateway]:
        self._settings.api.require_token()
        config = self._settings.engine
        async with Gateway(
            config.api, Limits.from_config(config), RetryPolicy.from_config(config)
        ) as gw:
            yield gw

    @asynccontextmanager
    async def _downloader(self) -> AsyncIterator[Downloader]:
        config = self._settings.engine
        async with Downloader(config.api, retry=RetryPolicy.from_config(config)) as downloader:
            yield downloader

    def _file_client(self) -> Any:
        """Return a replicate client used only to read `FileOutput`s, as users expect."""
        from replicate.client import Client  # noqa: PLC0415 - only when file outputs are asked for

        s = self._settings
        token = s.api.token.reveal() if s.api.token else None
        # Our CA bundle, and no kept-alive connections: a FileOutput outlives any place
        # that could close this client, so pooled sockets would leak until GC.
        return Client(api_token=token, base_url=s.api.base_url, transport=_FileTransport(s.api))

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
        return _blocking(self.run_model_async, model_id, input_params, use_file_output)

    async def run_model_async(
        self,
        model_id: str,
        input_params: Mapping[str, Any] | None = None,
        use_file_output: bool = True,
    ) -> Any:
        """Run a model without blocking the event loop; see `run_model`."""
        started = time.monotonic()
        ref = ModelRef.parse(model_id)
        async with self._gateway() as gateway:
            prediction = await gateway.create(ref, dict(input_params or {}))
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
        return _blocking(
            self.create_prediction_async,
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
        ref = ModelRef.parse(model_id)
        if version_id:
            ref = replace(ref, version=version_id)
        # The seed's own example filters on "failed", which Replicate does not know:
        # "completed" already covers every terminal state.
        events = _webhook_events(webhook_events_filter)
        async with self._gateway() as gateway:
            prediction = await gateway.create(
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

        Raise `PredictionTimeoutError` (a `TimeoutError`) past ``timeout`` seconds,
        `ModelError` when it failed, `PredictionCanceledError` when it was canceled.
        """
        return _blocking(self.wait_for_prediction_async, prediction, timeout)

    async def wait_for_prediction_async(
        self, prediction: Prediction | str, timeout: float | None = None
    ) -> Prediction:
        """Wait without blocking the event loop; see `wait_for_prediction`."""
        async with self._gateway() as gateway:
            current = (
                prediction if isinstance(prediction, Prediction) else await gateway.get(prediction)
            )
            limit = self.timeout if timeout is None else timeout
            return await _wait(gateway, current, limit, self._settings.poll_interval)

    def get_prediction(self, prediction: Prediction | str) -> Prediction:
        """Return the current state of a prediction."""
        return _blocking(self.get_prediction_async, prediction)

    async def get_prediction_async(self, prediction: Prediction | str) -> Prediction:
        """Return the current state of a prediction without blocking the loop."""
        async with self._gateway() as gateway:
            return await gateway.get(_id(prediction))

    def list_predictions(self, cursor: str | None = None) -> PredictionPage:
        """Return one page of your predictions, newest first; pass ``page.next`` for more."""
        return _blocking(self.list_predictions_async, cursor)

    async def list_predictions_async(self, cursor: str | None = None) -> PredictionPage:
        """List predictions without blocking the event loop; see `list_predictions`."""
        async with self._gateway() as gateway:
            return await gateway.list(cursor)

    def cancel_prediction(self, prediction: Prediction | str) -> Prediction:
        """Cancel a running prediction and return it (status ``canceled``)."""
        return _blocking(self.cancel_prediction_async, prediction)

    async def cancel_prediction_async(self, prediction: Prediction | str) -> Prediction:
        """Cancel without blocking the event loop; see `cancel_prediction`."""
        async with self._gateway() as gateway:
            canceled = await gateway.cancel(_id(prediction))
        log.info("client.cancel_prediction", prediction_id=canceled.id, status=str(canceled.status))
        return canceled

    # -- streaming -----------------------------------------------------------------------

    def stream_output(
        self, model_id: str, input_params: Mapping[str, Any] | None = None
    ) -> Iterator[StreamEvent]:
        """Yield server-sent events (``str(event)`` is the text of an output event)."""
        with anyio.from_thread.start_blocking_portal() as portal:
            events = self.stream_output_async(model_id, input_params)
            try:
                while True:
                    try:
                        yield portal.call(events.__anext__)
                    except StopAsyncIteration:
                        return
            finally:
                portal.call(events.aclose)

    async def stream_output_async(
        self, model_id: str, input_params: Mapping[str, Any] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield server-sent events without blocking the event loop."""
        ref = ModelRef.parse(model_id)
        async with self._gateway() as gateway:
            async for event in gateway.stream(ref, dict(input_params or {})):
                yield event

    # -- downloads -----------------------------------------------------------------------

    def download_output(self, output: Any, save_path: str | os.PathLike[str]) -> str | list[str]:
        """Save an output (`FileOutput`, URL, ``data:`` URI, or a list of them) to disk.

        Streams through ``save_path.part``, verifies the size, then renames; creates
        parent folders. Return the absolute path, or one path per item of a list
        (``name_0.ext``, ``name_1.ext``...).
        """
        return _blocking(self.download_output_async, output, save_path)

    async def download_output_async(
        self, output: Any, save_path: str | os.PathLike[str]
    ) -> str | list[str]:
        """Download without blocking the event loop; see `download_output`."""
        target = Path(os.path.abspath(os.path.expanduser(save_path)))  # noqa: PTH100,PTH111 - no I/O
        async with self._downloader() as downloader:
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


async def _wait(
    gateway: Gateway, prediction: Prediction, timeout: float, poll_interval: float
) -> Prediction:
    current = prediction
    deadline = time.monotonic() + timeout
    while not current.status.terminal:
        if time.monotonic() >= deadline:
            raise PredictionTimeoutError(
                current, f"prediction {current.id} still {current.status} after {timeout:g} s"
            )
        await anyio.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
        current = await gateway.get(current.id)
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


def _blocking(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``func(*args)`` on a fresh event loop in a worker thread and return its result."""
    with anyio.from_thread.start_blocking_portal() as portal:
        return portal.call(func, *args)


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
    """Forget the shared client; the next `get_replicate_client` reads the environment again.

    Use it in tests and after rotating the token.
    """
    global _singleton  # noqa: PLW0603
    with _singleton_lock:
        _singleton = None
