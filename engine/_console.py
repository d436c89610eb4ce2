"""Send the command line's log events to a person: the console, a text file, a JSON file.

Each event is rendered once per destination, at that destination's level, and masked by
`redact`. Console lines go through the one rich `Console` the live panel uses, so they
print above the panel instead of through it; rich honours ``NO_COLOR`` and writes no ANSI
codes when stderr is not a terminal. A line is one line: multi-line messages are folded,
and stamina's retry events read as "retry 2 in 0.5 s: ServerError(...)".
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, MutableMapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import structlog
from rich.console import Console
from rich.text import Text

from engine._prediction import web_url
from engine._redact import redact
from engine._wording import plural

__all__ = ["configure_cli_logging", "human_line"]

_LEVELS = logging.getLevelNamesMapping()
_STYLES = {"debug": "dim", "warning": "yellow", "error": "bold red", "critical": "bold red"}
_SPACE = re.compile(r"\s*\n\s*")
_FIRST = ("job", "prediction_id")  # context a reader scans for comes first
_HIDDEN = frozenset({"event", "level", "timestamp", "logger", "exc_info", "stack"})


@dataclass(frozen=True, slots=True)
class _Sink:
    level: int
    write: Callable[[MutableMapping[str, Any]], None]


def _clock(event: MutableMapping[str, Any]) -> str:
    stamp = event.get("timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S")
        except ValueError:
            return stamp
    return "--:--:--"


def _value(value: Any) -> str:
    text = _SPACE.sub(" ⏎ ", str(value)).strip()
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _progress(e: MutableMapping[str, Any]) -> str:
    eta = e.get("eta_seconds")
    eta_text = "-" if eta is None else f"{int(eta) // 60} min {int(eta) % 60} s"
    retries = plural(int(e.get("retries") or 0), "retry", "retries")
    return (
        f"progress: {e.get('done')}/{e.get('total')} done, {e.get('failed')} failed, "
        f"{e.get('in_flight')} in flight, {e.get('queued')} queued, "
        f"{e.get('creates_per_min')} creates/min (budget {e.get('create_budget_per_min'):g}), "
        f"{retries}, {_size(float(e.get('bytes_downloaded') or 0))}, "
        f"ETA {eta_text}" + (f" — {e['stopping']}" if e.get("stopping") else "")
    )


def _retry(e: MutableMapping[str, Any]) -> str:
    what = str(e.get("callable", ""))
    target = "" if what.startswith("<") or not what else f" {what}"
    job = f"job={e['job']} " if e.get("job") else ""
    return (
        f"{job}retry {e.get('retry_num')}{target} in {e.get('wait_for')} s: "
        f"{_SPACE.sub(' ', str(e.get('caused_by')))}"
    )


def human_line(event: MutableMapping[str, Any], *, clock: bool = True) -> str:
    """Return one readable line for ``event`` (no trailing newline)."""
    name = str(event.get("event", ""))
    if name == "run.progress":
        body = _progress(event)
    elif name == "stamina.retry_scheduled":
        body = _retry(event)
    else:
        keys = [k for k in _FIRST if k in event]
        keys += [k for k in event if k not in _HIDDEN and k not in _FIRST]
        keys = [k for k in keys if event[k] is not None and event[k] != {} and event[k] != []]
        body = " ".join([name, *(f"{k}={_value(event[k])}" for k in keys)])
    exc = event.get("exc_info")
    if isinstance(exc, BaseException):
        body += f" ({type(exc).__name__}: {_SPACE.sub(' ', str(exc))})"
    level = str(event.get("level", "info"))
    head = f"{_clock(event)} " if clock else ""
    tag = "" if level == "info" else f"{level.upper()} "
    return redact(f"{head}{tag}{body}")


# Events the command line says itself, as its one ``error:`` line: on the console they
# would be said twice (the files keep them, with their class).
_SAID_BY_THE_CLI = frozenset({"run.failed"})


# One 429 or 5xx is one line on the console: stamina's "retry N in S s: <error>" (or the
# job's own line once the retries are spent). The budget's pause and the attempt's record
# say the same again: below -v they go to the log files only. A budget lowered by a
# low-credit answer is news of its own, and shown.
_SAID_ONCE_BY_THE_RETRY = frozenset({"api.call", "api.throttled"})


def _console_sink(console: Console, level: int) -> _Sink:
    def write(event: MutableMapping[str, Any]) -> None:
        name = event.get("event")
        if name in _SAID_BY_THE_CLI:
            return
        if (
            name in _SAID_ONCE_BY_THE_RETRY
            and level > logging.DEBUG
            and event.get("low_credit_rate") is None
        ):
            return
        line = human_line(event)
        style = _STYLES.get(str(event.get("level")), "")
        console.print(Text(line, style=style), soft_wrap=not console.is_terminal, highlight=False)

    return _Sink(level, write)


def _text_sink(stream: TextIO, level: int) -> _Sink:
    formatter = structlog.processors.format_exc_info

    def write(event: MutableMapping[str, Any]) -> None:
        event = dict(event)
        if event.get("exc_info"):
            event = formatter(None, "", event)
        trace = event.pop("exception", None)
        line = human_line(event)
        stream.write(line + "\n" + (redact(trace) + "\n" if trace else ""))
        stream.flush()

    return _Sink(level, write)


def _json_sink(stream: TextIO, level: int) -> _Sink:
    tracebacks = structlog.processors.dict_tracebacks
    render = structlog.processors.JSONRenderer()

    def write(event: MutableMapping[str, Any]) -> None:
        event = dict(event)
        if event.get("exc_info"):
            event = tracebacks(None, "", event)
        prediction_id = event.get("prediction_id")
        if isinstance(prediction_id, str) and "url" not in event:
            event["url"] = web_url(prediction_id)  # a click away from its logs
        stream.write(redact(str(render(None, "", event))) + "\n")
        stream.flush()

    return _Sink(level, write)


def configure_cli_logging(
    stack: ExitStack,
    *,
    console: Console | None,
    console_level: int = logging.WARNING,
    text_file: Path | None = None,
    json_file: Path | None = None,
    file_level: int = logging.INFO,
) -> None:
    """Configure structlog for one command: each destination at its own level.

    ``console`` None sends nothing to the terminal. Files are opened for appending and
    closed by ``stack``, after structlog is reset to its defaults.
    """
    sinks: list[_Sink] = []
    for path in (text_file, json_file):
        if path is not None:  # inside the output folder the run is about to make (check_paths)
            path.parent.mkdir(parents=True, exist_ok=True)
    if console is not None:
        sinks.append(_console_sink(console, console_level))
    if text_file is not None:
        sinks.append(
            _text_sink(stack.enter_context(text_file.open("a", encoding="utf-8")), file_level)
        )
    if json_file is not None:
        sinks.append(
            _json_sink(stack.enter_context(json_file.open("a", encoding="utf-8")), file_level)
        )
    stack.callback(structlog.reset_defaults)
    lowest = min((s.level for s in sinks), default=logging.CRITICAL + 10)

    def fan_out(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
        number = _LEVELS.get(str(event.get("level", "info")).upper(), logging.INFO)
        for sink in sinks:
            if number >= sink.level:
                sink.write(event)
        raise structlog.DropEvent

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            fan_out,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lowest),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(stack, lowest)


class _ToStructlog(logging.Handler):
    """Send the standard library's records (httpx, uvicorn) through the same sinks."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            logger.log(record.levelno, record.getMessage(), logger_name=record.name)
        except Exception:  # noqa: BLE001 - a log line must never break the run
            self.handleError(record)


def _route_standard_logging(stack: ExitStack, lowest: int) -> None:
    root = logging.getLogger()
    handler = _ToStructlog(level=max(lowest, logging.WARNING))
    root.addHandler(handler)
    stack.callback(root.removeHandler, handler)
