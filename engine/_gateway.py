"""Talk to Replicate through one `Client`: the calls the engine makes, paced and retried.

This is the only module that calls replicate. `Gateway` owns the client and its async
httpx client; every HTTP attempt (including the client's own internal GET retries) passes
`engine._pacing.BudgetTransport`, which takes the create or read `Budget`. Each call
attempt opens an `engine._pacing.exchange` (``create=True`` for creates), and errors leave
as the engine's tree through `engine._errors.translate`, with ``raise ... from exc``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx
from replicate.client import Client
from replicate.exceptions import ReplicateError

from engine._api_paths import create_path, id_of, model_slug
from engine._attempts import call_attempts, log_call
from engine._config import ApiConfig
from engine._deadline import DeadlineTransport
from engine._errors import (
    InvalidRequestError,
    UnexpectedResponseError,
    translate,
)
from engine._gateway_values import PredictionPage, StreamEvent
from engine._http import async_transport, ssl_context
from engine._limits import Limits
from engine._logs import get_logger
from engine._pacing import BudgetTransport, Exchange, exchange
from engine._prediction import Prediction, PredictionStatus
from engine._redact import redact
from engine._retry import Predicate, RetryPolicy, retry_create, retry_idempotent
from engine._uploads import read_input_files
from jobs.model import ModelRef, RefKind

__all__ = ["Gateway", "PredictionPage", "StreamEvent"]

T = TypeVar("T")

log = get_logger("engine.gateway")


class Gateway:
    """Own one `Client`; expose the calls the engine needs, errors translated.

    Use as ``async with Gateway(api, limits, retry) as gw:``. A missing token raises
    `ConfigError` on entry, before any request.
    """

    def __init__(
        self,
        api: ApiConfig,
        limits: Limits,
        retry: RetryPolicy,
        *,
        pool: httpx.Limits | None = None,
    ) -> None:
        self.api = api
        self.pool = pool
        self.limits = limits
        self.retry = retry
        self.retries: Counter[str] = Counter()  # retried call errors, by class
        self._client: Client | None = None
        self._http: httpx.AsyncClient | None = None
        self._token = ""

    async def __aenter__(self) -> Self:
        self._token = self.api.require_token().reveal()
        headers: dict[str, str] = {}
        if self.api.cancel_after is not None:
            headers["Cancel-After"] = f"{max(1, math.ceil(self.api.cancel_after))}s"
        # httpx's default pool (20 kept alive) on purpose: httpcore checks every idle
        # connection on each request, and keeping 100 alive cost more CPU per create
        # (~5.2 ms vs ~4.3) than the TLS handshakes it saved. A long-lived client whose
        # calls come in bursts (``pool``) keeps more: see engine/_client_loop.py.
        # The deadline sits under the budget: time spent waiting for a slot is not the
        # server's to answer for.
        bounded = DeadlineTransport(
            async_transport(verify=ssl_context(self.api.ca_file), limits=self.pool),
            self.api.attempt_timeout,
        )
        transport = BudgetTransport(bounded, self.limits)
        connect = min(10.0, self.api.attempt_timeout or 10.0)
        self._client = Client(
            api_token=self._token,
            base_url=self.api.base_url,
            # No pool timeout: a request queued for a connection was not sent, and the
            # budgets already bound how many wait (a burst of 3,000 creates timed out here).
            timeout=httpx.Timeout(self.api.timeout, connect=connect, pool=None),
            transport=transport,
            headers=headers,
        )
        # Build the async httpx client now so that __aexit__ closes exactly what we made.
        self._http = self._client._async_client
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            with anyio.CancelScope(shield=True):
                await http.aclose()

    @property
    def client(self) -> Client:
        """Return the underlying client (for the seed wrapper's FileOutput objects)."""
        if self._client is None:
            raise RuntimeError("Gateway is not open: use 'async with Gateway(...)'")
        return self._client

    # -- calls -------------------------------------------------------------------------

    async def create(
        self,
        ref: ModelRef,
        input: Mapping[str, Any],
        *,
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] | None = None,
        stream: bool = False,
    ) -> Prediction:
        """Create a prediction for ``ref``; retried only when provably not accepted."""
        params: dict[str, Any] = {}
        if webhook is not None:
            params["webhook"] = webhook
        if webhook_events_filter is not None:
            params["webhook_events_filter"] = list(webhook_events_filter)
        if stream:
            params["stream"] = True
        client = self.client
        # Local @files read once, safely, before any attempt (InputFileError: that job).
        files_read = await read_input_files(input)

        async def once() -> Any:
            body = dict(files_read)
            # Call the per-kind namespaces: predictions.async_create(model=...) drops
            # parameters in 1.0.7 before delegating to them.
            if ref.kind is RefKind.MODEL:
                return await client.models.predictions.async_create(
                    model=ref.slug, input=body, **params
                )
            if ref.kind is RefKind.DEPLOYMENT:
                return await client.deployments.predictions.async_create(
                    deployment=ref.slug, input=body, **params
                )
            return await client.predictions.async_create(
                version=ref.version or "", input=body, **params
            )

        try:
            return await self._call(
                "create",
                "POST",
                create_path(ref),
                retry_create,
                lambda ex: self._prediction(once, ex),
                model=str(ref),
                create=True,
            )
        except InvalidRequestError as exc:
            if exc.status != 404:
                raise
            # Not "POST /v1/models/{owner}/{name}/predictions -> HTTP 404": say which.
            said = exc.detail or exc.title or "not found"
            raise InvalidRequestError(
                404,
                title=exc.title,
                detail=exc.detail,
                method=exc.method,
                path=exc.path,
                message=f"cannot run {ref}: {said} (HTTP 404); check the model name "
                "with `python -m engine validate MANIFEST`",
            ) from exc

    async def get(self, prediction_id: str) -> Prediction:
        """Return the prediction's current state."""
        client = self.client
        return await self._call(
            "get",
            "GET",
            "/v1/predictions/{id}",
            retry_idempotent,
            lambda ex: self._prediction(lambda: client.predictions.async_get(prediction_id), ex),
            prediction_id=prediction_id,
        )

    async def cancel(self, prediction_id: str) -> Prediction:
        """Cancel the prediction (idempotent: a terminal one comes back unchanged)."""
        client = self.client
        return await self._call(
            "cancel",
            "POST",
            "/v1/predictions/{id}/cancel",
            retry_idempotent,
            lambda ex: self._prediction(lambda: client.predictions.async_cancel(prediction_id), ex),
            prediction_id=prediction_id,
        )

    async def list(
        self,
        cursor: str | None = None,
        *,
        created_after: str | None = None,
        created_before: str | None = None,
    ) -> PredictionPage:
        """Return one page of the account's predictions, newest first.

        ``created_after`` and ``created_before`` (ISO 8601, exclusive) bound a listing
        in time; the server carries them along in ``next``. The JSON is read directly:
        replicate's pydantic model per entry costs more than the sweep's whole page, and
        fails the whole page on one ``aborted`` entry.
        """
        http = self.http
        window = {"created_after": created_after, "created_before": created_before}
        query = {k: v for k, v in window.items() if v is not None}

        async def once(_ex: Exchange) -> PredictionPage:
            # ``next`` is an absolute URL that carries the window; the first page asks.
            if cursor is None:
                response = await http.get("/v1/predictions", params=query)
            else:
                response = await http.get(cursor)
            response.raise_for_status()
            body = response.json()
            results = body.get("results") if isinstance(body, Mapping) else None
            if not isinstance(results, list) or not all(isinstance(i, Mapping) for i in results):
                raise UnexpectedResponseError("GET /v1/predictions: expected a page of results")
            lacking = frozenset(
                str(item.get("id"))
                for item in results
                if "output" not in item or "metrics" not in item
            )
            following = body.get("next")
            return PredictionPage(
                [Prediction.from_json(item) for item in results],
                following if isinstance(following, str) else None,
                lacking,
            )

        return await self._call("list", "GET", "/v1/predictions", retry_idempotent, once)

    async def get_model(self, ref: ModelRef) -> dict[str, Any]:
        """Return the model's JSON (``latest_version`` holds the newest version)."""
        return await self._get_json("get_model", f"/v1/models/{ref.owner}/{ref.name}")

    async def get_version(self, ref: ModelRef) -> dict[str, Any]:
        """Return the JSON of the version ``ref`` runs (its ``openapi_schema`` validates input).

        The version id comes from the reference, else the model's ``latest_version`` (an
        object, or null before the first push), else the deployment's ``current_release``:
        its ``version`` is a version id string (an object is accepted too), fetched through
        the release's ``model``. A model without a version or a deployment without a
        release raises `InvalidRequestError` (404) with a one-line reason.
        """
        if ref.kind is RefKind.DEPLOYMENT:
            return await self._deployment_version(ref)
        version_id = ref.version
        if version_id is None:
            model = await self.get_model(ref)
            version_id = id_of(model.get("latest_version"))
            if version_id is None:
                raise InvalidRequestError(
                    404, detail=f"model {ref} has no published version (latest_version is null)"
                )
        return await self._get_json(
            "get_version", f"/v1/models/{ref.owner}/{ref.name}/versions/{version_id}"
        )

    async def _deployment_version(self, ref: ModelRef) -> dict[str, Any]:
        deployment = await self._get_json(
            "get_deployment", f"/v1/deployments/{ref.owner}/{ref.name}"
        )
        release = deployment.get("current_release")
        if not isinstance(release, Mapping):
            raise InvalidRequestError(
                404, detail=f"deployment {ref.slug} has no current release: nothing to run"
            )
        version = release.get("version")
        if isinstance(version, Mapping) and isinstance(version.get("openapi_schema"), Mapping):
            return dict(version)  # a whole Version object: nothing more to fetch
        version_id = id_of(version)
        model = model_slug(release.get("model"))
        if version_id is None or model is None:
            raise UnexpectedResponseError(
                f"deployment {ref.slug}: its current release names no model and version"
            )
        return await self._get_json("get_version", f"/v1/models/{model}/versions/{version_id}")

    async def stream(
        self,
        ref: ModelRef,
        input: Mapping[str, Any],
    ) -> AsyncIterator[StreamEvent]:
        """Create a streaming prediction and yield its server-sent events.

        Not retried: a stream cannot be replayed. An SSE ``error`` event is yielded as a
        `StreamEvent` with ``event="error"`` and ends the stream (1.0.7 raises it).
        """
        if ref.kind is RefKind.DEPLOYMENT:
            raise InvalidRequestError(400, detail="replicate 1.0.7 cannot stream a deployment")
        client = self.client
        start = time.perf_counter()
        with exchange(create=True) as ex:
            try:
                events = await client.async_stream(str(ref), input=dict(input))
                async for sse in events:
                    data: Any = sse.data
                    # Output events pass transform_output: https:/data: strings became FileOutput.
                    text = data if isinstance(data, str) else str(getattr(data, "url", data))
                    yield StreamEvent(event=sse.event.value, data=text, id=sse.id)
            except RuntimeError as exc:  # the SSE "error" event, as 1.0.7 raises it
                yield StreamEvent(event="error", data=str(exc), id="")
            except (ReplicateError, httpx.HTTPError, ValueError) as exc:
                path = create_path(ref)
                error = translate(exc, ex, "POST", path, token=self._token)
                log_call("stream", ex, start, 1, path=path, error=error, model=str(ref))
                raise error from exc
        log_call("stream", ex, start, 1, path=create_path(ref), model=str(ref))

    # -- machinery ---------------------------------------------------------------------

    async def _get_json(self, name: str, path: str) -> dict[str, Any]:
        http = self._http
        if http is None:
            raise RuntimeError("Gateway is not open: use 'async with Gateway(...)'")

        async def once(_ex: Exchange) -> dict[str, Any]:
            # replicate's Model/Version objects turn JSON into datetimes and drop fields;
            # callers want the schema as JSON: ask the client's own httpx client (same
            # base URL, auth, retries and pacing) instead of its private _async_request.
            response = await http.get(path)
            response.raise_for_status()
            data = response.json()
            if not isinstance(data, dict):
                raise UnexpectedResponseError(f"GET {path}: expected a JSON object")
            return data

        return await self._call(name, "GET", path, retry_idempotent, once)

    async def _prediction(self, call: Callable[[], Awaitable[Any]], ex: Exchange) -> Prediction:
        try:
            obj = await call()
        except ValueError as exc:  # pydantic.v1.ValidationError is a ValueError
            # replicate 1.0.7's Prediction lists five statuses; Replicate now also answers
            # `aborted` (a Cancel-After deadline passed before start), and the client's parse
            # fails on that valid answer. The transport kept the JSON of this very exchange,
            # so read it from there: asking again would cost a request, and for a create
            # there is nothing safe to ask again.
            body = ex.body
            if isinstance(body, Mapping) and body.get("status") == PredictionStatus.ABORTED:
                return self._masked(Prediction.from_json(body))
            raise UnexpectedResponseError(redact(str(exc), secret=self._token)) from exc
        # The transport kept this answer's JSON: parsing it again is cheaper than pydantic's
        # deep-copying .dict() of the model replicate built from it.
        body = ex.body
        prediction = Prediction.from_json(body if isinstance(body, dict) else obj.dict())
        return self._masked(prediction)

    def _masked(self, prediction: Prediction) -> Prediction:
        """Mask the token where a server may echo it: the error (journaled) and the logs."""
        error, logs = prediction.error, prediction.logs
        if error is None and not logs:
            return prediction  # the common case: nothing from the server to mask
        return dataclasses.replace(
            prediction,
            error=None if error is None else redact(error, secret=self._token),
            logs=redact(logs, secret=self._token) if logs else logs,
        )

    async def _call(
        self,
        name: str,
        method: str,
        path: str,
        on: Predicate,
        once: Callable[[Exchange], Awaitable[T]],
        **where: Any,
    ) -> T:
        return await call_attempts(
            name,
            method,
            path,
            on,
            once,
            retry=self.retry,
            retries=self.retries,
            token=self._token,
            **where,
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """Return the open httpx client (auth, TLS, budgets) for URLs the API hands out."""
        if self._http is None:
            raise RuntimeError("Gateway is not open: use 'async with Gateway(...)'")
        return self._http
