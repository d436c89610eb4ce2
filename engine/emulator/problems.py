"""Build RFC 7807 problem responses with the exact bodies the real API sends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse, Response

__all__ = ["Problem", "json_response", "not_found", "unauthenticated"]


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Return compact JSON, like the API (and so ``Content-Length`` is small)."""
    body = json.dumps(data, separators=(",", ":")).encode()
    return Response(body, status, headers=dict(headers or {}), media_type="application/json")


class Problem(Exception):  # noqa: N818 - an answer, not a failure of ours
    """An API error: raise it from a handler to answer ``application/problem+json``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        """Return the problem as a response (``status`` mirrors the HTTP status)."""
        body = {"title": self.title, "detail": self.detail, "status": self.status, **self.extra}
        return JSONResponse(
            body, self.status, headers=self.headers, media_type="application/problem+json"
        )


def unauthenticated() -> Problem:
    """Return the real 401 for a missing or wrong token."""
    return Problem(401, "Unauthenticated", "You did not pass a valid authentication token")


def not_found(what: str = "The requested resource could not be found.") -> Problem:
    """Return a 404 problem."""
    return Problem(404, "Not found", what)
