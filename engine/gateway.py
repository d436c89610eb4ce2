"""Talk to Replicate through one `Client`; translate everything it raises.

This is the only module that calls replicate. `Gateway` owns the client and its async
httpx client; every HTTP attempt (including the client's own internal GET retries) passes
`BudgetTransport`, which takes the create or read `Budget` and turns a 429 into a shared
cooldown. Errors leave as the engine's tree (`engine.errors`) with ``raise ... from exc``,
built from problem details only, so a message never carries the token.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import json
import math
import re
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx
import structlog
from replicate.client import Client
from replicate.exceptions import ReplicateError

from engine.config import ApiConfig
from engine.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    EngineError,
    InvalidRequestError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)
from engine.limits import Budget, Limits
from engine.logging import redact
from engine.network import async_transport
from engine.prediction import Prediction, PredictionStatus
from engine.retry import Predicate, RetryPolicy, retry_create, retry_idempotent
from jobs.model import ModelRef, RefKind

__all__ = [
    "BudgetTransport",
    "Gateway",
    "PredictionPage",
    "StreamEvent",
    "parse_retry_after",
    "ssl_context",
    "translate_httpx_error",
]

T = TypeVar("T")

log = structlog.get_logger("engine.gateway")

_CREATE_PATH = re.compile(r"/v1/(?:predictions|(?:models|deployments)/[^/]+/[^/]+/predictions)$")
_LOW_CREDIT = re.compile(
    r"reduced to (\d+(?:\.\d+)?) requests? per minute(?: with a burst of (\d+))?", re.IGNORECASE
)
_JSON_BODY_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PredictionPage:
    """One page of ``GET /v1/predictions``; pass ``next`` back as the cursor."""

    results: list[Prediction]
    next: str | None = None

    def __iter__(self) -> Iterator[Prediction]:
        """Iterate over the page's predictions, as the seed's ``for pred in page`` does."""
        return iter(self.results)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of a stream: ``output``, ``logs``, ``error`` or ``done``."""

    event: str
    data: str
    id: str

    def __str__(self) -> str:
        """Return the text of an ``output`` event and "" otherwise, like replicate's events."""
        return self.data if self.event == "output" else ""


@dataclass(slots=True)
class _Exchange:
    """What the transport saw during one gateway call attempt (set via a context var)."""

    http_attempts: int = 0
    status: int | None = None
    raw: bytes | None = None  # the last JSON body, parsed only when someone needs it
    retry_after: float | None = None
    low_credit_rate: float | None = None
    statuses: list[int] = field(default_factory=list)

    @property
    def body(self) -> Any:
        """Return the last JSON body (for error details and statuses replicate cannot parse)."""
        if self.raw is None:
            return None
        try:
            return json.loads(self.raw)
        except ValueError:
            return None


# The transport runs in the calling task, so a context var connects one gateway call to
# the HTTP attempts replicate makes for it, without touching replicate's signatures.
_EXCHANGE: contextvars.ContextVar[_Exchange | None] = contextvars.ContextVar(
    "engine_gateway_exchange", default=None
)


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


def _is_create(request: httpx.Request) -> bool:
    return request.method == "POST" and _CREATE_PATH.search(request.url.path) is not None


def parse_retry_after(value: str | None) -> float | None:
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


class BudgetTransport(httpx.AsyncBaseTransport):
    """Take the create or read budget for every attempt; turn a 429 into a cooldown.

    Replicate's ``RetryTransport`` wraps this transport, so its internal GET retries pass
    here too and are paced. JSON bodies (small) are read here so that the gateway can see
    problem details (``invalid_fields``, ``retry_after``) that ``ReplicateError`` drops.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limits: Limits) -> None:
        self._inner = inner
        self._limits = limits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        budget = self._limits.create if _is_create(request) else self._limits.read
        await budget.acquire()
        exchange = _EXCHANGE.get()
        if exchange is not None:
            exchange.http_attempts += 1
        response = await self._inner.handle_async_request(request)
        content_type = response.headers.get("content-type", "")
        length = int(response.headers.get("content-length") or 0)
        raw: bytes | None = None
        if "json" in content_type and length <= _JSON_BODY_LIMIT:
            raw = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            await response.aclose()
            response = httpx.Response(
                response.status_code,
                headers=response.headers,
                content=raw,
                extensions=response.extensions,
                request=request,
            )
        if exchange is not None:
            exchange.status = response.status_code
            exchange.statuses.append(response.status_code)
            exchange.raw = raw
        if response.status_code == 429:
            body = None
            if raw is not None:
                with contextlib.suppress(ValueError):
                    body = json.loads(raw)
            self._throttled(budget, response, body, exchange)
        return response

    def _throttled(
        self, budget: Budget, response: httpx.Response, body: Any, exchange: _Exchange | None
    ) -> None:
        # Retry-After is a floor: take the larger of the header and the body's retry_after.
        waits = [parse_retry_after(response.headers.get("retry-after"))]
        detail = ""
        if isinstance(body, Mapping):
            raw = body.get("retry_after")
            waits.append(parse_retry_after(str(raw)) if raw is not None else None)
            detail = str(body.get("detail") or "")
        retry_after = max((w for w in waits if w is not None), default=1.0)
        budget.throttle(retry_after)
        low_credit = _LOW_CREDIT.search(detail)
        rate = float(low_credit.group(1)) if low_credit else None
        if low_credit is not None and rate is not None:
            budget.lower_rate(rate, burst=int(low_credit.group(2) or 1))
        if exchange is not None:
            exchange.retry_after = retry_after
            exchange.low_credit_rate = rate
        log.warning(
            "api.throttled",
            budget=budget.name,
            retry_after=retry_after,
            low_credit_rate=rate,
            rate_per_min=budget.rate_per_min,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def translate_httpx_error(exc: httpx.TransportError, what: str) -> TransportError:
    """Map an httpx network error to `TransportError`, deciding whether it may have been sent.

    Only a failed connect, a connect timeout or a pool timeout prove the request never
    left; a read timeout or a cut connection may come after the server acted on it.
    """
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportError(redact(f"{what}: {type(exc).__name__}: {exc}"), sent=sent)


class Gateway:
    """Own one `Client`; expose the calls the engine needs, errors translated.

    Use as ``async with Gateway(api, limits, retry) as gw:``. A missing token raises
    `ConfigError` on entry, before any request.
    """

    def __init__(self, api: ApiConfig, limits: Limits, retry: RetryPolicy) -> None:
        self.api = api
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
        # (~5.2 ms vs ~4.3) than the TLS handshakes it saved.
        transport = BudgetTransport(
            async_transport(verify=ssl_context(self.api.ca_file)), self.limits
        )
        self._client = Client(
            api_token=self._token,
            base_url=self.api.base_url,
            timeout=httpx.Timeout(self.api.timeout, connect=10.0, pool=10.0),
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
        wait: int | None = None,
    ) -> Prediction:
        """Create a prediction for ``ref``; retried only when provably not accepted."""
        params: dict[str, Any] = {}
        if webhook is not None:
            params["webhook"] = webhook
        if webhook_events_filter is not None:
            params["webhook_events_filter"] = list(webhook_events_filter)
        if stream:
            params["stream"] = True
        if wait:
            params["wait"] = wait
        client = self.client

        async def once() -> Any:
            body = dict(input)
            # Call the per-kind namespaces: predictions.async_create(model=...) drops
            # `wait` in 1.0.7 before delegating to them.
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

        return await self._call(
            "create",
            "POST",
            _create_path(ref),
            retry_create,
            lambda ex: self._prediction(once, ex),
            model=str(ref),
        )

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

    async def list(self, cursor: str | None = None) -> PredictionPage:
        """Return one page of the account's predictions, newest first."""
        client = self.client

        async def once(ex: _Exchange) -> PredictionPage:
            try:
                page = await client.predictions.async_list(... if cursor is None else cursor)
            except ValueError as exc:
                # See `_prediction`: one `aborted` entry fails the whole page's parse.
                if isinstance(ex.body, Mapping) and isinstance(ex.body.get("results"), list):
                    return PredictionPage(
                        [Prediction.from_json(item) for item in ex.body["results"]],
                        ex.body.get("next"),
                    )
                raise UnexpectedResponseError(_scrub_text(str(exc), self._token)) from exc
            return PredictionPage([Prediction.from_json(p.dict()) for p in page.results], page.next)

        return await self._call("list", "GET", "/v1/predictions", retry_idempotent, once)

    async def get_model(self, ref: ModelRef) -> dict[str, Any]:
        """Return the model's JSON (``latest_version`` holds the newest version)."""
        return await self._get_json("get_model", f"/v1/models/{ref.owner}/{ref.name}")

    async def get_version(self, ref: ModelRef) -> dict[str, Any]:
        """Return the JSON of the version ``ref`` runs (its ``openapi_schema`` validates input).

        The version id comes from the reference, else the model's (or deployment's)
        current one.
        """
        if ref.kind is RefKind.DEPLOYMENT:
            deployment = await self._get_json(
                "get_deployment", f"/v1/deployments/{ref.owner}/{ref.name}"
            )
            version = (deployment.get("current_release") or {}).get("version")
            if not isinstance(version, dict):
                raise UnexpectedResponseError(f"deployment {ref} has no current release version")
            return version
        version_id = ref.version
        if version_id is None:
            model = await self.get_model(ref)
            latest = model.get("latest_version") or {}
            version_id = latest.get("id") if isinstance(latest, dict) else None
            if not version_id:
                raise InvalidRequestError(404, detail=f"model {ref} has no published version")
        return await self._get_json(
            "get_version", f"/v1/models/{ref.owner}/{ref.name}/versions/{version_id}"
        )

    async def upload(self, path: Path) -> str:
        """Upload a local file; return the URL to put into a prediction's input."""
        client = self.client

        async def once(_ex: _Exchange) -> str:
            uploaded = await client.files.async_create(path)
            return str(uploaded.urls["get"])

        # A repeated upload costs nothing but a second file; retry as idempotent.
        return await self._call("upload", "POST", "/v1/files", retry_idempotent, once)

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
        exchange = _Exchange()
        token = _EXCHANGE.set(exchange)
        start = time.perf_counter()
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
            error = self._translate(exc, exchange, "POST", _create_path(ref))
            self._log(
                "stream", exchange, start, 1, path=_create_path(ref), error=error, model=str(ref)
            )
            raise error from exc
        finally:
            # The generator may be closed from another context; the var then is not ours.
            with contextlib.suppress(ValueError):
                _EXCHANGE.reset(token)
        self._log("stream", exchange, start, 1, path=_create_path(ref), model=str(ref))

    # -- machinery ---------------------------------------------------------------------

    async def _get_json(self, name: str, path: str) -> dict[str, Any]:
        client = self.client

        async def once(_ex: _Exchange) -> dict[str, Any]:
            # replicate's Model/Version objects turn JSON into datetimes and drop fields;
            # callers want the schema as JSON, so ask through the same client for raw JSON.
            response = await client._async_request("GET", path)
            data = response.json()
            if not isinstance(data, dict):
                raise UnexpectedResponseError(f"GET {path}: expected a JSON object")
            return data

        return await self._call(name, "GET", path, retry_idempotent, once)

    async def _prediction(self, call: Callable[[], Awaitable[Any]], ex: _Exchange) -> Prediction:
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
                return Prediction.from_json(body)
            raise UnexpectedResponseError(_scrub_text(str(exc), self._token)) from exc
        # The transport kept this answer's JSON: parsing it again is cheaper than pydantic's
        # deep-copying .dict() of the model replicate built from it.
        body = ex.body
        return Prediction.from_json(body if isinstance(body, dict) else obj.dict())

    async def _call(
        self,
        name: str,
        method: str,
        path: str,
        on: Predicate,
        once: Callable[[_Exchange], Awaitable[T]],
        *,
        prediction_id: str | None = None,
        model: str | None = None,
    ) -> T:
        attempt = 0
        async for attempt_ctx in self.retry.retrying(on, self.retries):
            with attempt_ctx:
                attempt += 1
                exchange = _Exchange()
                token = _EXCHANGE.set(exchange)
                start = time.perf_counter()
                failure: EngineError | None = None
                try:
                    return await once(exchange)
                except (ReplicateError, httpx.HTTPError, ValueError, KeyError) as exc:
                    failure = self._translate(exc, exchange, method, path)
                    raise failure from exc
                except EngineError as exc:
                    failure = exc
                    raise
                finally:
                    _EXCHANGE.reset(token)
                    self._log(
                        name,
                        exchange,
                        start,
                        attempt,
                        path=path,
                        error=failure,
                        prediction_id=prediction_id,
                        model=model,
                    )
        raise AssertionError("unreachable: stamina either returns or raises")

    def _log(
        self,
        name: str,
        exchange: _Exchange,
        start: float,
        attempt: int,
        *,
        path: str,
        error: EngineError | None = None,
        prediction_id: str | None = None,
        model: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "method": name,
            "path": path,
            "attempt": attempt,
            "http_attempts": exchange.http_attempts,
            "status": exchange.status,
            "duration_ms": round((time.perf_counter() - start) * 1000, 1),
        }
        if prediction_id is not None:
            fields["prediction_id"] = prediction_id
        if model is not None:
            fields["model"] = model
        if error is None:
            log.debug("api.call", **fields)
        else:
            log.warning("api.call", error=type(error).__name__, message=str(error), **fields)

    def _translate(
        self, exc: Exception, exchange: _Exchange, method: str, path: str
    ) -> EngineError:
        if isinstance(exc, httpx.TransportError):
            return translate_httpx_error(exc, f"{method} {path}")
        if isinstance(exc, ReplicateError):
            status = exc.status or exchange.status
            if status is None:  # raised by the client itself, e.g. "no stream URL"
                text = exc.detail or exc.title or exc.type or "replicate error"
                return UnexpectedResponseError(_scrub_text(str(text), self._token))
            return self._api_error(status, exc, exchange, method, path)
        if isinstance(exc, httpx.HTTPStatusError):
            status = exc.response.status_code
            return self._api_error(status, None, exchange, method, path)
        return UnexpectedResponseError(
            _scrub_text(f"{method} {path}: {type(exc).__name__}: {exc}", self._token)
        )

    def _api_error(
        self,
        status: int,
        exc: ReplicateError | None,
        exchange: _Exchange,
        method: str,
        path: str,
    ) -> ApiError:
        body = exchange.body if isinstance(exchange.body, Mapping) else {}
        title = exc.title if exc is not None else body.get("title")
        detail = exc.detail if exc is not None else body.get("detail")
        kwargs: dict[str, Any] = {
            "title": _scrub_text(title, self._token) if title else None,
            "detail": _scrub_text(detail, self._token) if detail else None,
            "method": method,
            "path": path,
        }
        if status == 401:
            return AuthenticationError(status, **kwargs)
        if status == 429:
            return RateLimitedError(
                status,
                retry_after=exchange.retry_after if exchange.retry_after is not None else 1.0,
                low_credit_rate=exchange.low_credit_rate,
                **kwargs,
            )
        if status >= 500:
            return ServerError(status, **kwargs)
        fields = body.get("invalid_fields")
        invalid = [f for f in fields if isinstance(f, dict)] if isinstance(fields, list) else []
        return InvalidRequestError(status, invalid_fields=invalid, **kwargs)

    @property
    def http(self) -> httpx.AsyncClient:
        """Return the open httpx client (auth, TLS, budgets) for URLs the API hands out."""
        if self._http is None:
            raise RuntimeError("Gateway is not open: use 'async with Gateway(...)'")
        return self._http


def _create_path(ref: ModelRef) -> str:
    if ref.kind is RefKind.MODEL:
        return "/v1/models/{owner}/{name}/predictions"
    if ref.kind is RefKind.DEPLOYMENT:
        return "/v1/deployments/{owner}/{name}/predictions"
    return "/v1/predictions"


def _scrub_text(text: str, token: str) -> str:
    if token:
        text = text.replace(token, "[REDACTED]")
    return redact(text)
