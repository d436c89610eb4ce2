"""Run the Redis commands of the CLI: ``run --redis``, ``worker``, ``status --redis``,
``journal export``. Imported only when one of them is used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

from engine._cluster._submit import export_run_journal, run_status, set_run_control, submit_jobs
from engine._cluster._worker import ClusterOptions, serve_worker
from engine.config import ApiConfig, EngineConfig
from engine.control import RunControl
from engine.errors import AuthenticationError, ConfigError
from engine.logging import configure_logging
from engine.precheck import checked_job_count
from engine.report import RunSummary
from jobs import ManifestError, read_manifest

__all__ = ["main_cluster"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_SIGNALS = frozenset({"SIGINT", "SIGTERM"})


def main_cluster(args: argparse.Namespace) -> int:
    """Dispatch a parsed command line that uses Redis; return the exit code."""
    if args.command == "status":
        return _status(args)
    if args.command == "journal":
        count = anyio.run(export_run_journal, args.redis, args.run, args.output)
        print(f"exported {count} jobs to {args.output}", file=sys.stderr)
        return EXIT_OK
    if not args.run:
        print("error: --redis needs --run NAME", file=sys.stderr)
        return EXIT_USAGE
    unsupported = _unsupported(args)
    if unsupported:
        print(f"error: {', '.join(unsupported)} cannot be used with --redis yet", file=sys.stderr)
        return EXIT_USAGE
    log_file = configure_logging(json=True, file=args.json_logs, level="INFO")
    try:
        if args.command == "worker":
            return _worker(args)
        return _run(args)
    finally:
        if log_file is not None:
            log_file.close()


# Run-wide stops and selections that a worker would apply alone: refused, not half-done.
_RUN_ONLY_FLAGS = {
    "deadline": "--deadline",
    "max_predictions": "--max-predictions",
    "max_predict_seconds": "--max-predict-seconds",
    "cancel_on_exit": "--cancel-on-exit",
    "only": "--only",
    "state": "--state",
    "emulator": "--emulator",
    "dry_run": "--dry-run",
}


def _unsupported(args: argparse.Namespace) -> list[str]:
    return [flag for name, flag in _RUN_ONLY_FLAGS.items() if getattr(args, name, None)]


def _config(args: argparse.Namespace, output_dir: Path) -> EngineConfig:
    return EngineConfig(
        api=ApiConfig.from_env(os.environ),
        output_dir=output_dir,
        concurrency=args.concurrency,
        create_rate=args.rate_limit,
        read_rate=args.read_rate_limit,
        max_retries=args.max_retries,
        poll_interval=args.poll_interval,
        job_timeout=args.job_timeout,
        retry_failed=args.retry_failed,
    )


def _options(args: argparse.Namespace) -> ClusterOptions:
    return ClusterOptions(args.redis, args.run, lease=args.lease, settle=args.settle)


def _worker(args: argparse.Namespace) -> int:
    config = _config(args, args.output_dir)
    problem: BaseException
    try:
        config.api.require_token()
        summary = anyio.run(_serve, config, _options(args), None)
    except* (AuthenticationError, ConfigError) as group:
        problem = group.exceptions[0]
    else:
        return summary.exit_code
    print(f"error: {problem}", file=sys.stderr)
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from engine.inspect import default_output_dir  # noqa: PLC0415

    output_dir = args.output_dir or default_output_dir(args.manifest)
    try:
        total = checked_job_count(args.manifest, output_dir)
    except (ManifestError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = _config(args, output_dir)
    problem: BaseException | None = None
    try:
        config.api.require_token()
        summary = anyio.run(_submit_and_serve, args, config)
    except* (AuthenticationError, ConfigError) as group:
        problem = group.exceptions[0]
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    status = anyio.run(run_status, args.redis, args.run)
    print(
        f"run {args.run}: {status['finished']}/{status['total']} jobs with an outcome "
        f"({total} in the manifest); by status {status['by_status']}",
        file=sys.stderr,
    )
    if summary.interrupted or summary.stopped_reason in _SIGNALS:
        return EXIT_INTERRUPTED
    complete = status["finished"] >= status["total"] and set(status["by_status"]) <= {"done"}
    return EXIT_OK if complete else EXIT_FAILED


async def _submit_and_serve(args: argparse.Namespace, config: EngineConfig) -> RunSummary:
    await submit_jobs(args.redis, args.run, read_manifest(args.manifest, checked=True))
    children = [_spawn_worker(args, config) for _ in range(max(0, args.workers - 1))]
    try:
        return await _serve(config, _options(args), args)
    finally:
        for child in children:
            await anyio.to_thread.run_sync(child.wait)


async def _serve(
    config: EngineConfig, options: ClusterOptions, args: argparse.Namespace | None
) -> RunSummary:
    """Work the queue; the first signal drains every worker, the second interrupts all."""
    control = RunControl()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, control, options, args is not None)
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
                print(f"\n{name}: telling every worker to {word}.", file=sys.stderr)
                await set_run_control(options.url, options.run, word)
            if count == 1:
                control.drain(name)
            else:
                control.interrupt(name)


def _spawn_worker(args: argparse.Namespace, config: EngineConfig) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "engine", "worker",
        "--redis", args.redis,
        "--run", args.run,
        "--lease", str(args.lease),
        *(["--settle", str(args.settle)] if args.settle is not None else []),
        "--output-dir", str(config.output_dir),
        "--concurrency", str(config.concurrency),
        "--rate-limit", str(config.create_rate),
        "--read-rate-limit", str(config.read_rate),
        "--max-retries", str(config.max_retries),
        "--poll-interval", str(config.poll_interval),
    ]  # fmt: skip
    if config.job_timeout is not None:
        command += ["--job-timeout", str(config.job_timeout)]
    if config.retry_failed:
        command.append("--retry-failed")
    # Its own session: Ctrl-C reaches this process only, which tells the workers via Redis.
    return subprocess.Popen(command, start_new_session=True)


def _status(args: argparse.Namespace) -> int:
    if not args.run:
        print("error: status --redis needs --run NAME", file=sys.stderr)
        return EXIT_USAGE
    report: dict[str, Any] = anyio.run(run_status, args.redis, args.run)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"run {report['run']}: {report['finished']}/{report['total']} with an outcome")
        for status, n in sorted(report["by_status"].items()):
            print(f"  {n:>8}  {status}")
        print(f"  workers live: {len(report['workers_live'])} (seen {report['workers_seen']})")
        print(f"  stream entries being worked: {report['entries_pending']}")
    done = report["by_status"].get("done", 0)
    return EXIT_OK if report["total"] and done == report["total"] else EXIT_FAILED
