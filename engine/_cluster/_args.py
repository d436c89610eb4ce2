"""Declare the ``--redis`` options of the command line (imports click, never redis).

The CLI commands (`engine._cli_*`) add these to ``run``, ``status``, ``worker`` and
``journal export``, and hand a command that uses Redis to `engine._cluster._cli`, the only
module that imports redis-py: without ``--redis`` nothing of it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from engine._settings import bounded, option

__all__ = [
    "REDIS_EXTRA_HINT",
    "RUN_ONLY_FLAGS",
    "lease_options",
    "redis_options",
    "workers_option",
]

F = TypeVar("F", bound=Callable[..., Any])

REDIS_EXTRA_HINT = "--redis needs the redis extra: pip install 'replicate-batch-engine[redis]'"

# Run-wide stops and selections that each worker would apply alone: refused with --redis
# rather than half-done. Parameter name -> the flag a user typed.
RUN_ONLY_FLAGS = {
    "deadline": "--deadline",
    "max_predictions": "--max-predictions",
    "max_predict_seconds": "--max-predict-seconds",
    "cancel_on_exit": "--cancel-on-exit",
    "only": "--only",
    "state": "--state",
    "emulator": "--emulator",
    "dry_run": "--dry-run",
    "prices": "--prices",
    "max_spend": "--max-spend",
    "log_file": "--log-file",
}


def redis_options(*, required: bool, what: str) -> Callable[[F], F]:
    """Return a decorator adding ``--redis URL`` and ``--run NAME``."""

    # A default (even None) would satisfy click's required check: give one only if optional.
    presence: dict[str, Any] = {"required": True} if required else {"default": None}

    def decorate(func: F) -> F:
        func = option(
            "--run",
            "run_name",
            **presence,
            metavar="NAME",
            show_default=False if required else "none (needs --redis)",
            help="The run's name in Redis: every process of one run uses the same.",
        )(func)
        return option(
            "--redis",
            "redis_url",
            **presence,
            metavar="URL",
            show_default=False if required else "none (this machine only)",
            help=f"{what} (redis://host:6379/0; needs the redis extra).",
        )(func)

    return decorate


def lease_options(func: F) -> F:
    """Add ``--lease`` (how soon a dead worker's jobs are taken over).

    How long a claimer then waits before listing for the dead worker's create is the run
    setting ``--settle`` (engine/_settings.py), the same window a single machine uses.
    """
    return option(
        "--lease",
        type=bounded(float, 0, inclusive=False),
        default=15.0,
        metavar="SECONDS",
        show_default="15",
        help="With --redis: a worker silent this long has its jobs claimed by another.",
    )(func)


def workers_option(func: F) -> F:
    """Add ``--workers K`` to ``run``."""
    return option(
        "--workers",
        type=bounded(int, 1),
        default=1,
        metavar="K",
        show_default=True,
        help="With --redis: worker processes on this machine, this one included.",
    )(func)
