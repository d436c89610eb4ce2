"""Run one gateway call's attempts: retried, each in its exchange, translated, logged.

Split from `engine._gateway` (issue 11): `Gateway` says what to call; `call_attempts`
retries it per the `RetryPolicy`, maps foreign errors through `engine._errors.translate`
and logs one ``api.call`` line per attempt (`log_call`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from replicate.exceptions import ReplicateError

from engine._errors import EngineError, translate
from engine._logs import get_logger
from engine._pacing import Exchange, exchange
from engine._retry import Predicate, RetryPolicy

__all__ = ["call_attempts", "log_call"]

T = TypeVar("T")

log = get_logger("engine.gateway")


async def call_attempts(
    name: str,
    method: str,
    path: str,
    on: Predicate,
    once: Callable[[Exchange], Awaitable[T]],
    *,
    retry: RetryPolicy,
    retries: Counter[str],
    token: str,
    prediction_id: str | None = None,
    model: str | None = None,
    create: bool = False,
) -> T:
    attempt = 0
    async for attempt_ctx in retry.retrying(on, retries):
        with attempt_ctx, exchange(create=create) as ex:
            attempt += 1
            start = time.perf_counter()
            failure: EngineError | None = None
            try:
                return await once(ex)
            except (ReplicateError, httpx.HTTPError, ValueError, KeyError) as exc:
                failure = translate(exc, ex, method, path, token=token)
                raise failure from exc
            except EngineError as exc:
                failure = exc
                raise
            finally:
                log_call(
                    name,
                    ex,
                    start,
                    attempt,
                    path=path,
                    error=failure,
                    prediction_id=prediction_id,
                    model=model,
                    retried=failure is None or bool(on(failure)),
                )
    raise AssertionError("unreachable: stamina either returns or raises")


def log_call(
    name: str,
    exchange: Exchange,
    start: float,
    attempt: int,
    *,
    path: str,
    error: EngineError | None = None,
    prediction_id: str | None = None,
    model: str | None = None,
    retried: bool = True,
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
    elif retried:
        log.warning("api.call", error=type(error).__name__, message=str(error), **fields)
    else:
        # Not retried: the caller reports it once (job.failed, run.failed, validate).
        log.debug("api.call", error=type(error).__name__, message=str(error), **fields)
