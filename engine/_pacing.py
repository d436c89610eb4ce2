"""Pace every HTTP attempt to Replicate: the budget transport and its per-call exchange.

Every attempt (including replicate's own internal GET retries) passes `BudgetTransport`,
which takes the create or read `Budget` and turns a 429 into a shared cooldown. The
gateway opens an `Exchange` per call with `exchange()`; the transport runs in the calling
task, so the context variable connects the call to its HTTP attempts without touching
replicate's signatures. Whether a call is a create is said by the caller
(``exchange(create=True)``), not guessed from the URL.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine._http import parse_retry_after
from engine._limits import Budget, Limits
from engine._logs import get_logger

__all__ = ["BudgetTransport", "Exchange", "exchange"]

log = get_logger("engine.gateway")

_LOW_CREDIT = re.compile(
    r"reduced to (\d+(?:\.\d+)?) requests? per minute(?: with a burst of (\d+))?", re.IGNORECASE
)
_JSON_BODY_LIMIT = 4 * 1024 * 1024


@dataclass(slots=True)
class Exchange:
    """What the transport saw during one gateway call attempt (set via a context var)."""

    create: bool = False  # the call creates a prediction: its POSTs take the create budget
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


_EXCHANGE: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar(
    "engine_gateway_exchange", default=None
)


@contextlib.contextmanager
def exchange(*, create: bool = False) -> Iterator[Exchange]:
    """Open the exchange of one call attempt for the HTTP attempts made inside it."""
    current = Exchange(create=create)
    token = _EXCHANGE.set(current)
    try:
        yield current
    finally:
        # A stream's generator may be closed from another context; the var then is not ours.
        with contextlib.suppress(ValueError):
            _EXCHANGE.reset(token)


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
        exchange = _EXCHANGE.get()
        # A create call's POST is the create; a stream's follow-up GET is a read.
        create = exchange is not None and exchange.create and request.method == "POST"
        budget = self._limits.create if create else self._limits.read
        await budget.acquire()
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
        self, budget: Budget, response: httpx.Response, body: Any, exchange: Exchange | None
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
