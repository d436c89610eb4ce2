"""Log through loggers the host controls; configure structlog only for the CLI.

Event names are stable and dotted (``api.call``, ``download.completed``, ``job.finished``);
per-job context is bound with `structlog.contextvars`. Library code gets its loggers from
`get_logger`: until structlog is configured (by our CLI's `configure_logging` or by the
host app), an event goes to the standard-library logger of the same name (``engine.*``),
so an app that configured nothing sees nothing below WARNING (Python's last-resort handler
writes warnings to stderr, never stdout), and an app that configured `logging` gets
records whose message is ``event key=value ...`` and whose attributes are the event's
fields. Once structlog is configured, events go through that configuration.
`redact_secrets` is a processor that applies `engine._redact.redact` to every value of an
event, for applications that configure structlog themselves. `configure_logging` masks
the rendered line instead: one pass covers every value, key and traceback, at a fraction
of the cost of walking each event.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from engine._redact import redact

__all__ = ["LibraryLogger", "configure_logging", "get_logger", "redact_secrets"]


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 4:
        return value
    if isinstance(value, Mapping):
        return {k: _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask token-looking strings in every value of the event (a structlog processor)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _scrub(value)
    return event_dict


# Attributes a LogRecord owns: an event field of the same name is stored as ``field_<name>``.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


class LibraryLogger:
    """A logger for library code: structlog once configured, else the stdlib logger.

    ``debug``, ``info``, ``warning`` and ``error`` (what the engine uses). The check is made at
    each call, so configuring logging after import takes effect.
    """

    __slots__ = ("_proxy", "_std")

    def __init__(self, name: str) -> None:
        self._proxy = structlog.get_logger(name)
        self._std = logging.getLogger(name)

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at DEBUG."""
        if structlog.is_configured():
            self._proxy.debug(event, **fields)
        elif self._std.isEnabledFor(logging.DEBUG):
            self._to_stdlib(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO."""
        if structlog.is_configured():
            self._proxy.info(event, **fields)
        elif self._std.isEnabledFor(logging.INFO):
            self._to_stdlib(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at WARNING."""
        if structlog.is_configured():
            self._proxy.warning(event, **fields)
        elif self._std.isEnabledFor(logging.WARNING):
            self._to_stdlib(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR."""
        if structlog.is_configured():
            self._proxy.error(event, **fields)
        elif self._std.isEnabledFor(logging.ERROR):
            self._to_stdlib(logging.ERROR, event, fields)

    def _to_stdlib(self, level: int, event: str, fields: dict[str, Any]) -> None:
        merged = {**structlog.contextvars.get_contextvars(), **fields}
        scrubbed = {k: _scrub(v) for k, v in merged.items() if v is not None}
        text = " ".join([event, *(f"{k}={v}" for k, v in scrubbed.items())])
        extra: dict[str, Any] = {"event": event}
        for key, value in scrubbed.items():
            extra[f"field_{key}" if key in _RECORD_ATTRIBUTES else key] = value
        # stacklevel 3: the record names the engine's line, not this wrapper.
        self._std.log(level, "%s", redact(text), extra=extra, stacklevel=3)


def get_logger(name: str) -> LibraryLogger:
    """Return the logger library code uses for ``name`` (``engine.<part>``)."""
    return LibraryLogger(name)


def _redact_rendered(_logger: Any, _method: str, rendered: Any) -> Any:
    # After the renderer: whatever reached the line (values, keys, tracebacks) is masked.
    return redact(rendered) if isinstance(rendered, str) else rendered


def configure_logging(
    *,
    json: bool,
    level: int | str = logging.INFO,
    file: Path | None = None,
) -> TextIO | None:
    """Configure structlog for the process: JSON lines or console, to stderr or a file.

    Call once, from the CLI. ``level`` is a `logging` level or its name. A ``file`` is
    opened for appending and returned: the caller owns it and closes it when the run ends
    (after `structlog.reset_defaults()` or a new configuration). Without one, returns None.
    """
    if isinstance(level, str):
        numeric = logging.getLevelNamesMapping().get(level.upper())
        if numeric is None:
            raise ValueError(f"unknown log level {level!r}")
    else:
        numeric = level
    renderer: structlog.typing.Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=file is None and sys.stderr.isatty())
    if file is not None:  # inside the output folder the run is about to make (check_paths)
        file.parent.mkdir(parents=True, exist_ok=True)
    stream: TextIO = file.open("a", encoding="utf-8") if file is not None else sys.stderr
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks]
    processors += [renderer, _redact_rendered]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    return stream if file is not None else None
