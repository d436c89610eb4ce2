"""End a command with an exit code after one line: the CLI's one error edge.

`Stop` is what a command raises; `cli.main` prints it and returns its code. The helpers
here turn the errors of the steps the commands share into a `Stop`.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from rich.console import Console

from engine._cli_run import api_config
from engine._config import ApiConfig
from engine._errors import ConfigError
from engine._precheck import checked_job_count
from engine._pricing import PriceTable, load_prices
from engine._redact import redact
from engine._report import EXIT_BROKEN_PIPE, EXIT_USAGE
from jobs import Job, ManifestError
from jobs.errors import shorten

__all__ = [
    "StderrConsole",
    "Stop",
    "checked_api_config",
    "checked_prices",
    "checked_total",
    "configured_secret",
    "error_line",
    "quiet_gone_readers",
    "reader_may_leave",
    "said_if_read",
    "stdout_reader_gone",
]


def configured_secret() -> str:
    """Return the token the environment configures ("" when none, or when it is unusable).

    For the commands that send nothing (status, export): their output is redacted of it
    all the same, as a run's is.
    """
    try:
        token = ApiConfig.from_env(os.environ).token
    except ConfigError:
        return ""
    return token.reveal() if token else ""


def error_line(message: str, *, secret: str = "") -> str:
    """Return ``error: <message>`` as every command prints it: redacted, bounded, one line."""
    return f"error: {shorten(redact(message, secret=secret))}"


class Stop(Exception):  # noqa: N818 - a control-flow signal, not an error type
    """End the command with an exit code after printing one line."""

    def __init__(self, message: str | None, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """End quietly with 141 when the reader of stdout goes away (``export | head``)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_gone_readers(sys.stdout.fileno())
        raise Stop(None, EXIT_BROKEN_PIPE) from None


_GONE: set[int] = set()  # the descriptors whose reader went away, in this process


def stdout_reader_gone() -> bool:
    """Tell whether the reader of standard output went away (then: exit 141)."""
    return 1 in _GONE


def quiet_gone_readers(broken: int | None = None) -> None:
    """Point each of stdout and stderr whose reader went away at /dev/null.

    ``broken`` is known gone; the other is asked (``run ... 2>&1 | head`` closes both at
    once). Later writes, and the flush at interpreter exit, then go nowhere instead of
    raising again: the command finishes its work and says what it can where it can.
    """
    gone = {broken} if broken is not None else set()
    for fd in (1, 2):
        with contextlib.suppress(OSError, ValueError):
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            if any(event & select.POLLERR for _, event in poller.poll(0)):
                gone.add(fd)
    _GONE.update(gone)
    for fd in gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


@contextmanager
def said_if_read() -> Iterator[None]:
    """Let a line to stderr be lost when its reader went away; the command goes on."""
    try:
        yield
    except BrokenPipeError:
        quiet_gone_readers(sys.stderr.fileno())


class StderrConsole(Console):
    """Standard error's console: a reader that went away silences it, and the run goes on.

    rich would point stdout at /dev/null and exit 1 (a run's work cut short, its summary
    lost, and an exit code the table does not have).
    """

    def __init__(self) -> None:
        super().__init__(stderr=True)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        quiet_gone_readers(sys.stderr.fileno())


def checked_api_config(emulator: bool, stack: ExitStack, console: Console) -> ApiConfig:
    """Return the API (or the started emulator's) configuration."""
    try:
        return api_config(emulator, stack, console)
    except ConfigError as exc:
        raise Stop(str(exc)) from None


def checked_total(
    manifest: Path,
    state_dir: Path,
    *,
    allow_outside_files: bool = False,
    local_file: Callable[[Job, Path], None] | None = None,
) -> int:
    """Return the manifest's job count, checked before anything is sent."""
    try:
        return checked_job_count(
            manifest, state_dir, allow_outside_files=allow_outside_files, local_file=local_file
        )
    except ManifestError as exc:
        raise Stop(str(exc)) from None
    except OSError as exc:
        raise Stop(f"cannot read manifest {manifest}: {exc.strerror}") from None


def checked_prices(path: Path | None) -> PriceTable | None:
    """Return the ``--prices`` table, if one was given."""
    if path is None:
        return None
    try:
        return load_prices(path)
    except ConfigError as exc:
        raise Stop(str(exc)) from None
