"""Run the Redis commands of the CLI: ``run --redis``, ``worker``, ``status --redis``,
``journal export``. Imported by `engine._cli_redis` only when one of them is used.

Problems a user can fix (no Redis there, a refused token) are raised as `ConfigError`:
the command line prints them on one line and exits 2.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import structlog
from redis.exceptions import RedisError

from engine._cluster._submit import export_run_journal, run_status, set_run_control, submit_jobs
from engine._cluster._worker import ClusterOptions, serve_worker
from engine._config import EngineConfig
from engine._control import RunControl
from engine._errors import AuthenticationError, ConfigError
from engine._logs import configure_logging
from engine._report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, RunSummary
from engine._wording import plural
from jobs import Job, read_manifest

__all__ = [
    "configure_cluster_logging",
    "export_from_redis",
    "run_on_redis",
    "serve_on_redis",
    "status_on_redis",
]

_SIGNALS = frozenset({"SIGINT", "SIGTERM"})

T = TypeVar("T")


def configure_cluster_logging(
    stack: ExitStack, *, quiet: bool, verbose: bool, json_logs: Path | None
) -> None:
    """Log JSON lines (a worker's log is read by machines) to stderr, or to ``json_logs``."""
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    handle = configure_logging(json=True, file=json_logs, level=level)
    stack.callback(structlog.reset_defaults)
    if handle is not None:
        stack.callback(handle.close)


def _call(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``func`` in a new event loop; turn what the user must fix into `ConfigError`."""
    problem: BaseException
    try:
        return anyio.run(func, *args)
    except* (AuthenticationError, ConfigError) as group:
        problem = group
    except* RedisError as group:
        problem = group
    while isinstance(problem, BaseExceptionGroup):  # task groups may nest
        problem = problem.exceptions[0]
    if isinstance(problem, RedisError):
        raise ConfigError(f"Redis: {problem}") from None
    raise problem


def serve_on_redis(config: EngineConfig, options: ClusterOptions) -> int:
    """Join a run as one more worker (``engine worker``); return the exit code."""
    config.api.require_token()
    summary = _call(_serve, config, options)
    return summary.exit_code


def run_on_redis(
    manifest: Path,
    config: EngineConfig,
    options: ClusterOptions,
    *,
    workers: int,
    total: int,
    worker_args: Sequence[str] = (),
    allow_outside_files: bool = False,
) -> int:
    """Submit ``manifest`` to the run, work it here with ``workers`` processes, report.

    ``worker_args`` are added to the command line of each worker started here (its logs);
    ``allow_outside_files`` lets ``@path`` inputs name files outside the manifest's folder
    (every machine's workers must see them at the same path).
    """
    config.api.require_token()
    # The CLI's checked_total read the whole file (or its stamp vouches for it).
    jobs = partial(
        read_manifest, manifest, trust_earlier_check=True, allow_outside_files=allow_outside_files
    )
    summary = _call(_submit_and_serve, jobs, config, options, workers, tuple(worker_args))
    status = _call(run_status, options.url, options.run)
    counts = ", ".join(f"{n} {name}" for name, n in sorted(status["by_status"].items()))
    click.echo(
        f"run {options.run}: {status['finished']}/{status['total']} jobs with an outcome "
        f"({total} in the manifest): {counts or 'none yet'}",
        err=True,
    )
    if summary.interrupted or summary.stopped_reason in _SIGNALS:
        return EXIT_INTERRUPTED
    complete = status["finished"] >= status["total"] and set(status["by_status"]) <= {"done"}
    return EXIT_OK if complete else EXIT_FAILED


def status_on_redis(url: str, run: str, *, as_json: bool) -> int:
    """Print the whole run's counts from Redis; 0 when every job is done."""
    report: dict[str, Any] = _call(run_status, url, run)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(f"run {report['run']}: {report['finished']}/{report['total']} with an outcome")
        for name, n in sorted(report["by_status"].items()):
            click.echo(f"  {n:>8}  {name}")
        click.echo(f"  workers live: {len(report['workers_live'])} (seen {report['workers_seen']})")
        click.echo(f"  stream entries being worked: {report['entries_pending']}")
    done = report["by_status"].get("done", 0)
    return EXIT_OK if report["total"] and done == report["total"] else EXIT_FAILED


def export_from_redis(url: str, run: str, output: Path) -> int:
    """Write the run's standard journal at ``output``; return the exit code."""
    try:
        written = _call(export_run_journal, url, run, output)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"exported {plural(written, 'job')} to {output}", err=True)
    return EXIT_OK


async def _submit_and_serve(
    jobs: Callable[[], Iterable[Job]],
    config: EngineConfig,
    options: ClusterOptions,
    workers: int,
    worker_args: tuple[str, ...],
) -> RunSummary:
    await submit_jobs(options.url, options.run, jobs())
    children = [_spawn_worker(config, options, worker_args) for _ in range(workers - 1)]
    try:
        return await _serve(config, options, everyone=True)
    finally:
        for child in children:
            await anyio.to_thread.run_sync(child.wait)


async def _serve(
    config: EngineConfig, options: ClusterOptions, *, everyone: bool = False
) -> RunSummary:
    """Work the queue; the first signal drains every worker, the second interrupts all."""
    control = RunControl()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, control, options, everyone)
        summary = await serve_worker(config, options, control=control)
        tg.cancel_scope.cancel()
    return summary


async def _handle_signals(control: RunControl, options: ClusterOptions, everyone: bool) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            name = signal.Signals(signum).name
            word = "drain" if count == 1 else "interrupt"
            if everyone:  # the submitting process speaks for the whole run
                click.echo(f"\n{name}: telling every worker to {word}.", err=True)
                await set_run_control(options.url, options.run, word)
            if count == 1:  # as on one machine: drain, ended by --shutdown-grace at most
                control.drain(name, interrupted=True)
            else:
                control.interrupt(name)


def _spawn_worker(
    config: EngineConfig, options: ClusterOptions, extra: tuple[str, ...]
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "engine", "worker",
        "--redis", options.url,
        "--run", options.run,
        "--lease", str(options.lease),
        "--settle", str(config.settle),
        "--output-dir", str(config.output_dir),
        "--concurrency", str(config.concurrency),
        "--rate-limit", str(config.create_rate),
        "--read-rate-limit", str(config.read_rate),
        "--max-retries", str(config.prediction_retries),
        "--poll-interval", str(config.poll_interval),
        "--shutdown-grace", str(config.shutdown_grace),
    ]  # fmt: skip
    if config.api.attempt_timeout is not None:
        command += ["--attempt-timeout", str(config.api.attempt_timeout)]
    if config.job_timeout is not None:
        command += ["--job-timeout", str(config.job_timeout)]
    if config.retry_failed:
        command.append("--retry-failed")
    if config.embed_metadata:
        command.append("--embed-metadata")
    if not config.sidecars:
        command.append("--no-sidecars")
    command += extra
    # Its own session: Ctrl-C reaches this process only, which tells the workers via Redis.
    return subprocess.Popen(command, start_new_session=True)
