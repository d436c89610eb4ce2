"""The engine's errors: one tree, and the one mapping into it from replicate and httpx.

::

    EngineError
    ├── ConfigError                 bad configuration (e.g. no token); names the variables
    │   └── JournalLockedError      another process runs this journal (``holder`` says who)
    ├── ApiError                    the API answered 4xx/5xx (``status``, ``title``, ``detail``)
    │   ├── AuthenticationError     401/403: the token is missing, wrong or not allowed
    │   ├── InvalidRequestError     400/404/413/422: the request will never succeed as sent
    │   ├── RateLimitedError        429: ``retry_after`` seconds, ``low_credit`` when throttled
    │   └── ServerError             5xx
    ├── PredictionMayExistError     a create's answer was lost and the prediction list
    │                               could not tell whether it was stored
    ├── TransportError              the connection failed; ``sent`` tells whether the
    │                               request may have reached the server
    ├── UnexpectedResponseError     the server answered something the client cannot parse
    ├── InputFileError              an ``@file`` input cannot be sent as it was checked
    │                               (not a regular file any more, changed, deleted)
    ├── PredictionError             a prediction ended without success (``prediction``)
    │   ├── ModelError              status ``failed`` (also a ``replicate.exceptions.ModelError``)
    │   ├── PredictionCanceledError status ``canceled`` or ``aborted``
    │   └── PredictionTimeoutError  our deadline passed (also a builtin ``TimeoutError``)
    └── DownloadError               an output could not be stored (``url`` without secrets)
        ├── OutputExpiredError      404/410: Replicate deleted it (about an hour after creation)
        ├── IntegrityError          size or checksum did not match
        └── StorageError            the local disk refused (full, read-only, permission)

``ManifestError`` lives in `jobs` (it needs no network) and is re-exported by `engine`.

Messages never contain the API token: `translate` and `translate_httpx_error` build
them from problem details and URLs only, never from request headers, and pass them
through `engine._redact.redact`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
from replicate.exceptions import ModelError as _ReplicateModelError
from replicate.exceptions import ReplicateError

from engine._redact import redact

if TYPE_CHECKING:
    from engine._pacing import Exchange
    from engine._prediction import Prediction

__all__ = [
    "ApiError",
    "AuthenticationError",
    "ConfigError",
    "DownloadError",
    "EngineError",
    "InputFileError",
    "IntegrityError",
    "InvalidRequestError",
    "JournalLockedError",
    "ModelError",
    "OutputExpiredError",
    "PredictionCanceledError",
    "PredictionError",
    "PredictionMayExistError",
    "PredictionTimeoutError",
    "RateLimitedError",
    "ServerError",
    "StorageError",
    "TransportError",
    "UnexpectedResponseError",
    "one_error",
    "translate",
    "translate_httpx_error",
]


class EngineError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(EngineError):
    """Raise when the configuration cannot work (missing token, bad value)."""


class JournalLockedError(ConfigError):
    """Raise when another process holds the journal's lock: two runs would pay twice."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder  # "pid 123 on host", as the holder wrote it; None if unknown


class ApiError(EngineError):
    """The API answered with an error status."""

    def __init__(
        self,
        status: int,
        *,
        title: str | None = None,
        detail: str | None = None,
        method: str = "",
        path: str = "",
        message: str | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.method = method
        self.path = path
        what = f"{method} {path} " if method else ""
        text = detail or title or "no detail"
        # ``message`` says it for a person (which model, what to do); the default names
        # the call, which is all a generic API error can say.
        super().__init__(message or f"{what}-> HTTP {status}: {text}")

    @property
    def permanent(self) -> bool:
        """Return True when sending the same request again cannot succeed."""
        return True


class AuthenticationError(ApiError):
    """401 or 403: the token is missing, wrong, revoked, or not allowed to do this."""


class InvalidRequestError(ApiError):
    """400/402/404/413/422: the request is wrong as sent (bad input, unknown model...)."""

    def __init__(
        self,
        status: int,
        *,
        title: str | None = None,
        detail: str | None = None,
        method: str = "",
        path: str = "",
        invalid_fields: list[dict[str, Any]] | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(
            status, title=title, detail=detail, method=method, path=path, message=message
        )
        self.invalid_fields = invalid_fields or []


class RateLimitedError(ApiError):
    """429: throttled. ``retry_after`` is the server's floor for the next attempt."""

    def __init__(
        self,
        status: int = 429,
        *,
        title: str | None = None,
        detail: str | None = None,
        method: str = "",
        path: str = "",
        retry_after: float = 1.0,
        low_credit_rate: float | None = None,
    ) -> None:
        super().__init__(status, title=title, detail=detail, method=method, path=path)
        self.retry_after = retry_after
        # Requests per minute the server says we are limited to (low-credit throttle).
        self.low_credit_rate = low_credit_rate

    @property
    def permanent(self) -> bool:
        return False


class ServerError(ApiError):
    """5xx: the server failed; whether the request took effect is unknown for a POST."""

    @property
    def permanent(self) -> bool:
        return False


class TransportError(EngineError):
    """The connection failed before a full answer arrived.

    ``sent`` is False only when the request provably never reached the server (connect
    error or timeout, pool timeout); a create may then be retried without paying twice.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class UnexpectedResponseError(EngineError):
    """The server answered with JSON the client could not parse."""


class InputFileError(EngineError):
    """An ``@file`` input cannot be uploaded: a FIFO or device now, changed or gone.

    It fails its job, never the run; nothing was created.
    """


class PredictionError(EngineError):
    """A prediction ended without success. ``prediction`` holds id, status, logs, error."""

    def __init__(self, prediction: Prediction, message: str | None = None) -> None:
        self.prediction = prediction
        # Exception.__init__ directly: replicate's ModelError.__init__ (later in the MRO of
        # our ModelError) expects a prediction, not a message.
        Exception.__init__(
            self, message or f"prediction {prediction.id} {prediction.status}: {prediction.error}"
        )


class ModelError(PredictionError, _ReplicateModelError):  # type: ignore[misc]  # our Prediction, not pydantic's
    """The prediction failed (status ``failed``).

    Also a ``replicate.exceptions.ModelError``, so code written for the replicate client
    catches it unchanged. ``permanent`` is True for errors no retry can fix (invalid input,
    safety filter).
    """

    def __init__(self, prediction: Prediction, *, permanent: bool = False) -> None:
        PredictionError.__init__(
            self, prediction, f"prediction {prediction.id} failed: {prediction.error}"
        )
        self.permanent = permanent


class PredictionCanceledError(PredictionError):
    """The prediction was canceled (or aborted by its deadline) before it produced output."""


class PredictionTimeoutError(PredictionError, TimeoutError):
    """Our deadline for the prediction passed; it may still be running on Replicate."""


class DownloadError(EngineError):
    """An output file could not be stored. ``url`` never carries credentials."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class OutputExpiredError(DownloadError):
    """404/410 for an output: Replicate deletes outputs about an hour after creation."""


class IntegrityError(DownloadError):
    """The bytes received do not match ``Content-Length`` or the recorded sha256."""


class StorageError(DownloadError):
    """The local disk refused a write (full, read-only, permission).

    Raised by a run the disk stopped mid-way, ``summary`` is what the run did until then
    (a `engine.RunSummary`; None when it stopped before or without one).
    """

    summary: Any = None


def translate_httpx_error(exc: httpx.TransportError, what: str) -> TransportError:
    """Map an httpx network error to `TransportError`, deciding whether it may have been sent.

    Only a failed connect, a connect timeout or a pool timeout prove the request never
    left; a read timeout or a cut connection may come after the server acted on it.
    """
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportError(redact(f"{what}: {type(exc).__name__}: {exc}"), sent=sent)


def translate(
    exc: Exception, exchange: Exchange, method: str, path: str, *, token: str
) -> EngineError:
    """Map what replicate or httpx raised during one API call to our tree (``token`` masked).

    ``exchange`` is what the pacing transport saw: the status and problem details that
    ``ReplicateError`` drops (``invalid_fields``, ``retry_after``, the low-credit rate).
    """
    if isinstance(exc, httpx.TransportError):
        return translate_httpx_error(exc, f"{method} {path}")
    if isinstance(exc, ReplicateError):
        status = exc.status or exchange.status
        if status is None:  # raised by the client itself, e.g. "no stream URL"
            text = exc.detail or exc.title or exc.type or "replicate error"
            return UnexpectedResponseError(redact(str(text), secret=token))
        return _api_error(status, exc, exchange, method, path, token=token)
    if isinstance(exc, httpx.HTTPStatusError):
        return _api_error(exc.response.status_code, None, exchange, method, path, token=token)
    return UnexpectedResponseError(
        redact(f"{method} {path}: {type(exc).__name__}: {exc}", secret=token)
    )


def _api_error(
    status: int,
    exc: ReplicateError | None,
    exchange: Exchange,
    method: str,
    path: str,
    *,
    token: str,
) -> ApiError:
    body = exchange.body if isinstance(exchange.body, Mapping) else {}
    title = exc.title if exc is not None else body.get("title")
    detail = exc.detail if exc is not None else body.get("detail")
    kwargs: dict[str, Any] = {
        "title": redact(title, secret=token) if title else None,
        "detail": redact(detail, secret=token) if detail else None,
        "method": method,
        "path": path,
    }
    if status in (401, 403):
        said = kwargs["detail"] or kwargs["title"] or "no detail"
        if status == 401:
            what = "Replicate refused the API token"
            hint = "check REPLICATE_API_TOKEN"
        else:
            what = "the API token is not allowed to do this"
            hint = f"{method} {path}"
        message = f"{what} (HTTP {status}: {said}); {hint}"
        return AuthenticationError(status, message=message, **kwargs)
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


class PredictionMayExistError(EngineError):
    """A create's answer was lost (5xx, cut connection) and the list could not be read.

    The prediction may exist, run and be billed. ``model``, ``input_digest`` (sha256 of
    the canonical input JSON, as `jobs.input_digest` computes it) and ``sent_at`` (unix
    seconds) identify it in the prediction list; the cause is chained.
    """

    def __init__(self, model: str, input_digest: str, sent_at: float, reason: str) -> None:
        self.model = model
        self.input_digest = input_digest
        self.sent_at = sent_at
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sent_at))
        super().__init__(
            f"a prediction of {model} may exist: the create sent at {when} lost its answer "
            f"({reason}) and the prediction list could not be read to find it; look for "
            f"input digest {input_digest} created after {when} before running it again"
        )


# Which error of several says most about why a run ended: the whole run's setup first.
_RANKS: tuple[type[BaseException], ...] = (
    AuthenticationError,
    ConfigError,
    StorageError,
    EngineError,
    OSError,
)


def one_error(exc: BaseException) -> BaseException:
    """Reduce what ended a run to the one error to raise in its place.

    Task groups wrap errors in (nested) exception groups; a person and a host app want
    the error itself. A cancellation or an interrupt among the leaves wins (it must keep
    propagating); else the leaf that says most (`_RANKS`), an `OSError` becoming a
    `StorageError` with the file and the reason. Anything else comes back unchanged.
    """
    leaves = list(_leaves(exc))
    for leaf in leaves:
        if not isinstance(leaf, Exception):
            return leaf
    for kind in _RANKS:
        for leaf in leaves:
            if isinstance(leaf, kind):
                if isinstance(leaf, OSError):
                    return _os_error(leaf)
                return leaf
    return leaves[0] if leaves else exc


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _os_error(exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    where = f" {exc.filename}" if exc.filename is not None else ""
    error = StorageError(f"cannot write{where}: {reason}")
    error.__cause__ = exc
    return error
