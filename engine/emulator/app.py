"""Assemble the emulator: shared state, the request guard (auth, limits, faults), routes."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, Literal

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.emulator import handlers, resources
from engine.emulator.catalogue import MODELS, ModelSpec, canonical_key
from engine.emulator.config import EmulatorConfig
from engine.emulator.lifecycle import PredictionRecord, new_id
from engine.emulator.problems import Problem, json_response, unauthenticated
from engine.emulator.ratelimit import (
    LOW_CREDIT_BURST,
    LOW_CREDIT_RATE,
    TokenBucket,
    retry_after_seconds,
    throttle_detail,
)
from engine.emulator.shapes import layout
from engine.emulator.stats import Stats
from engine.emulator.uploads import Upload
from engine.emulator.webhooks import new_secret, watch_prediction

__all__ = ["Emulator"]

# The limiter and fault class of an endpoint; "download" (output files) is never throttled.
Kind = Literal["create", "get", "list", "cancel", "read", "download"]
Handler = Callable[["Emulator", Request], Awaitable[Response]]
_COUNTERS = (
    "create_5xx_first",
    "get_5xx_first",
    "throttle_next_creates",
    "throttle_next_lists",
    "hang_creates",
)
_THROTTLED = {"create": "throttle_next_creates", "list": "throttle_next_lists"}
_INSUFFICIENT_CREDIT = (
    "You have insufficient credit to run this model. "
    "Go to https://replicate.com/account/billing#billing to purchase credit."
)
_WEB_INPUT_IMAGE = "https://replicate.delivery/emulator/web-input.png"


class Emulator:
    """The Replicate API emulator: ``.app`` (ASGI), ``.stats``, ``.update(**knobs)``.

    ``clock`` drives the prediction lifecycle only; it must advance with real time (it
    may be offset), because sync waits and SSE sleep in real seconds. Rate limits always
    use the monotonic clock.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        config = config or EmulatorConfig()
        if config.webhook_secret is None:
            config = config.replace(webhook_secret=new_secret())
        self.config = config
        self.clock = clock
        self.stats = Stats()
        self.rng = random.Random(config.seed)
        self.predictions: dict[str, PredictionRecord] = {}
        self.order: list[PredictionRecord] = []
        self.uploads: dict[str, Upload] = {}
        self.downloads: Counter[str] = Counter()
        self.remaining = {name: int(getattr(config, name)) for name in _COUNTERS}
        self.foreign_pending = config.foreign_predictions  # made at the next API request
        self.salt_changed = 0.0  # when output_salt last changed (files' Last-Modified floor)
        self.create_bucket = TokenBucket(*self._create_limits())
        self.read_bucket = TokenBucket(config.read_rate_per_min, config.read_burst)
        self._tasks: anyio.abc.TaskGroup | None = None
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    def _create_limits(self) -> tuple[float, int]:
        if self.config.low_credit:
            return LOW_CREDIT_RATE, LOW_CREDIT_BURST
        return self.config.create_rate_per_min, self.config.create_burst

    def update(self, **knobs: Any) -> EmulatorConfig:
        """Change knobs at run time; counters named in ``knobs`` restart from their value."""
        self.config = self.config.replace(**knobs)
        for name in _COUNTERS:
            if name in knobs:
                self.remaining[name] = int(knobs[name])
        if "seed" in knobs:
            self.rng.seed(self.config.seed)
        if "foreign_predictions" in knobs:
            self.foreign_pending = int(knobs["foreign_predictions"])
        if "output_salt" in knobs:
            self.salt_changed = self.clock()
        self.create_bucket.reconfigure(*self._create_limits())
        self.read_bucket.reconfigure(self.config.read_rate_per_min, self.config.read_burst)
        return self.config

    def add(self, record: PredictionRecord, base_url: str) -> None:
        """Store a new prediction, deciding its output files (URLs on ``base_url``)."""
        record.template, record.files = layout(
            record.model.kind,
            record.input,
            canonical_key(record.model, record.input),
            video_id=record.id,
            video_size=record.video_size,
        )
        record.file_urls = [f"{base_url}/files/{record.id}/{f.name}" for f in record.files]
        self.predictions[record.id] = record
        self.order.append(record)

    def _add_foreign(self, base_url: str) -> None:
        """Add the pending predictions made "on the web": other models, other inputs."""
        models = [m for m in MODELS.values() if m.kind != "fails" and m.published]
        for k in range(self.foreign_pending):
            model = models[k % len(models)]
            props = model.input_schema.get("properties", {})
            data: dict[str, Any] = {
                name: _WEB_INPUT_IMAGE
                if props.get(name, {}).get("format") == "uri"
                else f"made on the web #{k}"
                for name in model.input_schema.get("required", ())
            }
            # Strictly after the last one, so created_at orders them as the list does.
            now = max(self.clock(), self.order[-1].created + 2e-6 if self.order else 0.0)
            record = self.new_record(model, data, now, source="web")
            self.add(record, base_url)
        self.stats.foreign_predictions += self.foreign_pending
        self.foreign_pending = 0

    def new_record(
        self, model: ModelSpec, data: dict[str, Any], now: float, **fields: Any
    ) -> PredictionRecord:
        """Return the next prediction of ``model`` created at ``now``, timed by its model."""
        timing = self.config.timing(model.ref, model.timing)
        return PredictionRecord(
            id=new_id(),
            seq=len(self.order),
            model=model,
            version=model.version_id,
            input=data,
            created=now,
            started=now + timing.cold_start,
            finished=now + timing.cold_start + timing.run_time,
            video_size=self.config.video_size,
            **fields,
        )

    async def _refuse_create(self, request: Request, handler: Handler) -> Problem | None:
        """Return the answer of a create refused by a fault knob (402, or a hang's end)."""
        if self.config.insufficient_credit:
            return Problem(402, "Insufficient credit", _INSUFFICIENT_CREDIT)
        if self.config.forbidden_creates:
            return Problem(403, "Forbidden", "You do not have permission to perform this action.")
        if self.remaining["hang_creates"] > 0:
            self.remaining["hang_creates"] -= 1
            if self.config.hang_after_store:
                await handler(self, request)  # stored (and billed); the answer is lost
            return await self._hang(request)
        return None

    async def _hang(self, request: Request) -> Problem:
        """Read a create, then answer nothing until the client leaves (or ``hang_seconds``)."""
        await request.body()
        self.stats.hung_creates += 1
        with anyio.move_on_after(self.config.hang_seconds):
            while (await request.receive())["type"] != "http.disconnect":
                pass
        return Problem(504, "Gateway Timeout", "The request took too long to answer")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the webhook client and background tasks (the app's lifespan uses this)."""
        async with httpx.AsyncClient(trust_env=False) as client, anyio.create_task_group() as tg:
            self._tasks, self._http = tg, client
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                self._tasks = self._http = None

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with self.running():
            yield

    def require_webhooks(self) -> None:
        """Refuse a webhook before storing anything when no lifespan owns deliveries."""
        if self._tasks is None or self._http is None:
            raise Problem(503, "Webhooks unavailable", "Run the app with its lifespan for webhooks")

    def watch(self, record: PredictionRecord, base_url: str) -> None:
        """Start webhook deliveries for ``record`` in the emulator's task group."""
        self.require_webhooks()
        assert self._tasks is not None
        self._tasks.start_soon(
            lambda: watch_prediction(
                record,
                client=self._client(),
                clock=self.clock,
                render=lambda now: record.render(now, base_url, self.config.output_expiry),
                config=lambda: self.config,
                stats=self.stats,
            )
        )

    def _client(self) -> httpx.AsyncClient:
        assert self._http is not None
        return self._http

    # -- the guard every API request passes -------------------------------------------

    def _fault(self, kind: Kind) -> bool:
        counter = {"create": "create_5xx_first", "get": "get_5xx_first"}.get(kind)
        if counter and self.remaining[counter] > 0:
            self.remaining[counter] -= 1
            return True
        name = "file_5xx_rate" if kind == "download" else f"{kind}_5xx_rate"
        rate = getattr(self.config, name, 0.0)
        return bool(rate) and self.rng.random() < rate

    def _throttle(self, kind: Kind) -> Problem | None:
        now = time.monotonic()
        bucket = self.create_bucket if kind == "create" else self.read_bucket
        counter = _THROTTLED.get(kind)
        if counter and self.remaining[counter] > 0:
            self.remaining[counter] -= 1
            wait = 1.0
        else:
            wait = bucket.take(now)
        if not wait:
            return None
        seconds = retry_after_seconds(wait)
        detail = throttle_detail(seconds, low_credit=self.config.low_credit and kind == "create")
        headers = {
            "retry-after": str(seconds),
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(seconds),
        }
        return Problem(429, "Too Many Requests", detail, headers=headers, retry_after=seconds)

    async def _guarded(
        self, request: Request, endpoint: str, kind: Kind, handler: Handler
    ) -> Response:
        config = self.config
        if config.latency_seconds:
            await anyio.sleep(config.latency_seconds)
        try:
            if request.headers.get("authorization") != f"Bearer {config.token}":
                raise unauthenticated()
            if self.foreign_pending:
                self._add_foreign(resources.base_url(request))
            if kind != "download":
                problem = self._throttle(kind)
                if problem is not None:
                    raise problem
            refusal = await self._refuse_create(request, handler) if kind == "create" else None
            if refusal is not None:
                raise refusal
            fault = self._fault(kind)
            if fault and not (kind == "create" and config.create_5xx_after_store):
                raise self._server_error()
            if config.stall_rate and self.rng.random() < config.stall_rate:
                await anyio.sleep(config.stall_seconds)
            response = await handler(self, request)
            if fault:
                raise self._server_error()  # the prediction was stored: an orphan
        except Problem as problem:
            response = problem.response()
        if kind != "download":
            bucket = self.create_bucket if kind == "create" else self.read_bucket
            response.headers.setdefault("ratelimit-remaining", str(bucket.remaining()))
            response.headers.setdefault("ratelimit-reset", "1")
        self.stats.request(endpoint, response.status_code, kind)
        return response

    def _server_error(self) -> Problem:
        status = self.config.fault_status
        return Problem(status, "Internal server error", "Emulated server fault, please retry")

    def _route(
        self, path: str, handler: Handler, endpoint: str, kind: Kind, method: str = "GET"
    ) -> Route:
        async def call(request: Request) -> Response:
            return await self._guarded(request, endpoint, kind, handler)

        return Route(path, call, methods=[method], name=endpoint)

    def _routes(self) -> list[Route]:
        r = self._route
        h, res = handlers, resources
        return [
            r("/v1/predictions", h.create_by_version, "predictions.create", "create", "POST"),
            r(
                "/v1/models/{owner}/{name}/predictions",
                h.create_by_model,
                "models.predictions.create",
                "create",
                "POST",
            ),
            r(
                "/v1/deployments/{owner}/{name}/predictions",
                h.create_by_deployment,
                "deployments.predictions.create",
                "create",
                "POST",
            ),
            r("/v1/predictions", h.list_predictions, "predictions.list", "list"),
            r("/v1/predictions/{id}", h.get_prediction, "predictions.get", "get"),
            r(
                "/v1/predictions/{id}/cancel",
                h.cancel_prediction,
                "predictions.cancel",
                "cancel",
                "POST",
            ),
            r("/v1/streams/{id}", h.stream_prediction, "predictions.stream", "read"),
            r("/v1/models", res.list_models, "models.list", "read"),
            r("/v1/models", res.search_models, "models.search", "read", "QUERY"),
            r("/v1/models/{owner}/{name}", res.get_model, "models.get", "read"),
            r("/v1/models/{owner}/{name}/versions", res.list_versions, "versions.list", "read"),
            r("/v1/models/{owner}/{name}/versions/{vid}", res.get_version, "versions.get", "read"),
            r("/v1/deployments", res.list_deployments, "deployments.list", "read"),
            r("/v1/deployments/{owner}/{name}", res.get_deployment, "deployments.get", "read"),
            r("/v1/account", res.account, "account.get", "read"),
            r("/v1/hardware", res.hardware, "hardware.list", "read"),
            r("/v1/webhooks/default/secret", res.webhook_secret, "webhooks.secret", "read"),
            r("/v1/files", res.upload_file, "files.create", "read", "POST"),
            r("/v1/files", res.list_files, "files.list", "read"),
            r("/v1/files/{id}", res.get_file, "files.get", "read"),
            r("/v1/files/{id}", res.delete_file, "files.delete", "read", "DELETE"),
            r("/v1/files/{id}/download", res.download_upload, "files.download", "download"),
            r("/files/{id}/{name}", res.download_output, "outputs.get", "download"),
            Route("/_emulator/stats", self._admin_stats, methods=["GET"]),
            Route("/_emulator/config", self._admin_config, methods=["GET", "POST"]),
        ]

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        """Answer unknown paths and methods with problem JSON, as the API does."""
        status = getattr(exc, "status_code", 404)
        self.stats.request("unknown", status)
        title = "Not found" if status == 404 else "Method not allowed"
        return Problem(status, title, f"{request.method} {request.url.path}").response()

    async def _admin_stats(self, _request: Request) -> Response:
        return json_response(self.stats.snapshot())

    async def _admin_config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                knobs = await request.json()
                self.update(**knobs)
            except (ValueError, TypeError) as exc:
                return json_response({"detail": str(exc)}, 400)
        data = asdict(self.config)
        data.pop("webhook_secret")
        data.pop("token")
        return json_response(data)
