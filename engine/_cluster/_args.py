"""Declare the ``--redis`` flags and the ``worker``/``journal`` commands (no redis import).

`engine.cli` calls `add_cluster_arguments` while it builds its parser, and hands any
command that uses Redis to `engine._cluster._cli.main_cluster`, which imports redis-py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_cluster_arguments", "wants_cluster"]

_COMMANDS = frozenset({"worker", "journal"})


def wants_cluster(args: argparse.Namespace) -> bool:
    """Return True when the command line asks for a Redis-coordinated run."""
    return args.command in _COMMANDS or bool(getattr(args, "redis", None))


def add_cluster_arguments(
    sub: Any, *, run: argparse.ArgumentParser, status: argparse.ArgumentParser
) -> None:
    """Add ``--redis``/``--run``/``--workers``/``--lease`` and the cluster-only commands."""
    _shared(run)
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --redis: worker processes on this machine, this one included",
    )
    status.add_argument("--redis", default=None, metavar="URL", help="the whole run, from Redis")
    status.add_argument("--run", default=None, metavar="NAME")

    worker = sub.add_parser("worker", help="join a run coordinated by Redis (--redis)")
    _shared(worker, required=True)
    worker.add_argument("--output-dir", type=Path, required=True)
    worker.add_argument("--concurrency", type=int, default=32)
    worker.add_argument("--rate-limit", type=float, default=600.0)
    worker.add_argument("--read-rate-limit", type=float, default=3000.0)
    worker.add_argument("--max-retries", type=int, default=2)
    worker.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS")
    worker.add_argument("--poll-interval", type=float, default=0.5)
    worker.add_argument("--retry-failed", action="store_true")
    worker.add_argument("--json-logs", type=Path, default=None, metavar="PATH")

    journal = sub.add_parser("journal", help="journal tools")
    jsub = journal.add_subparsers(dest="journal_command", required=True)
    export = jsub.add_parser("export", help="write a standard journal of a Redis run")
    _shared(export, required=True)
    export.add_argument("--output", type=Path, required=True, metavar="JOURNAL")


def _shared(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--redis",
        required=required,
        default=None,
        metavar="URL",
        help="coordinate through Redis, e.g. redis://host:6379/0",
    )
    parser.add_argument("--run", required=required, default=None, metavar="NAME")
    parser.add_argument(
        "--lease",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="heartbeat lease; a worker silent this long has its jobs claimed",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long after a dead worker's create before looking for it "
        "(default: the API read timeout)",
    )
