"""The command line: the only place that reads flags and the environment.

Exit codes: 0 every job done, 1 some jobs not done (failed, canceled, stopped by a
budget or deadline), 2 usage, manifest or configuration error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import anyio
import structlog

from engine._config import (
    REPORT_NAME,
    ApiConfig,
    EngineConfig,
    Secret,
    default_output_dir,
    journal_path,
)
from engine._control import RunControl
from engine._display import Progress
from engine._errors import AuthenticationError, ConfigError, StorageError
from engine._journal import load_journal
from engine._logs import configure_logging
from engine._paths import check_apart_from_outputs, check_paths
from engine._precheck import checked_job_count
from engine._report import RunSummary
from engine._runner import run_jobs
from engine._status import (
    export_rows,
    print_status,
    resolve_journal,
    status_report,
    write_export,
)
from jobs import ManifestError, read_manifest

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

log = structlog.get_logger("engine.cli")
# EngineConfig's field defaults are the only defaults: flags default to None (not given).
_DEFAULTS = EngineConfig()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        # The emulator has its own flags; argparse's REMAINDER cannot pass "--port" through.
        _require_emulator_extra()
        from engine.emulator.cli import serve_forever  # noqa: PLC0415 - heavy, only here

        code: int = serve_forever(argv[1:])
        return code
    args = _parser().parse_args(argv)
    try:  # bad configuration (base URL, token, paths): one line, before anything is paid
        return _command(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _command(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _validate(args) if args.dry_run else _run(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "status":
        return _status(args)
    if args.command == "export":
        return _export(args)
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Run thousands of Replicate predictions: bounded, rate-limited, resumable.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a YAML or JSONL manifest")
    run.add_argument("manifest", type=Path)
    run.add_argument("--output-dir", type=Path, default=None, help="default: ./outputs/<name>")
    run.add_argument("--state", type=Path, default=None, help="journal path")
    run.add_argument("--concurrency", type=_positive_int, default=None)
    run.add_argument(
        "--rate-limit",
        type=_positive_float,
        default=None,
        help=f"prediction creates per minute (default {_DEFAULTS.create_rate:g})",
    )
    run.add_argument(
        "--read-rate-limit",
        type=_positive_float,
        default=None,
        help=f"other API calls per minute (default {_DEFAULTS.read_rate:g})",
    )
    run.add_argument("--max-retries", type=_non_negative_int, default=None)
    run.add_argument("--retry-failed", action="store_true")
    run.add_argument("--only", nargs="+", default=(), metavar="ID")
    run.add_argument("--job-timeout", type=_positive_float, default=None, metavar="SECONDS")
    run.add_argument("--deadline", type=_positive_float, default=None, metavar="SECONDS")
    run.add_argument("--max-predictions", type=_non_negative_int, default=None)
    run.add_argument("--max-predict-seconds", type=_positive_float, default=None)
    run.add_argument("--cancel-on-exit", action="store_true")
    run.add_argument("--poll-interval", type=_positive_float, default=None)
    run.add_argument("--json-logs", type=Path, default=None, metavar="PATH")
    run.add_argument("--attempt-timeout", type=_positive_float, default=None, metavar="SECONDS")
    run.add_argument("--shutdown-grace", type=_non_negative_float, default=None, metavar="SECONDS")
    run.add_argument("--allow-outside-files", action="store_true", help="send @files outside")
    run.add_argument(
        "--emulator",
        action="store_true",
        help="start the built-in emulator and run against it (no token needed)",
    )
    run.add_argument("--dry-run", action="store_true", help="validate and print the plan only")

    val = sub.add_parser("validate", help="check a manifest against the models' schemas")
    val.add_argument("manifest", type=Path)
    val.add_argument("--output-dir", type=Path, default=None)
    val.add_argument("--state", type=Path, default=None)
    val.add_argument("--emulator", action="store_true")
    val.add_argument("--read-rate-limit", type=_positive_float, default=None)

    st = sub.add_parser("status", help="counts and failures from the journal (no network)")
    st.add_argument("target", type=Path, metavar="MANIFEST_OR_STATE")
    st.add_argument("--output-dir", type=Path, default=None)
    st.add_argument("--state", type=Path, default=None)
    st.add_argument("--json", action="store_true", help="print the counts as JSON")

    ex = sub.add_parser("export", help="one row per output file, in manifest order")
    ex.add_argument("manifest", type=Path)
    ex.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    ex.add_argument("--output-dir", type=Path, default=None)
    ex.add_argument("--state", type=Path, default=None)
    ex.add_argument("--output", type=Path, default=None, help="default: standard output")

    sub.add_parser("emulator", help="serve the local Replicate API emulator (see its --help)")
    return parser


def _run(args: argparse.Namespace) -> int:
    out = args.output_dir or default_output_dir(args.manifest)
    writes = {
        "--state": journal_path(out, args.state),
        "--json-logs": args.json_logs,
        "the report": out / REPORT_NAME,
    }
    check_paths(reads={"the manifest": args.manifest}, writes=writes, output_dir=out)
    live = sys.stderr.isatty()
    # On a terminal the live panel tells the story: only warnings reach the console, and
    # --json-logs still gets every event.
    quiet = live and args.json_logs is None
    log_file = configure_logging(
        json=args.json_logs is not None or not live,
        file=args.json_logs,
        level="WARNING" if quiet else "INFO",
    )
    try:
        return _run_logged(args, live=live)
    finally:
        if log_file is not None:
            log_file.close()


def _run_logged(args: argparse.Namespace, *, live: bool) -> int:
    output_dir = args.output_dir or default_output_dir(args.manifest)
    state_dir = journal_path(output_dir, args.state).parent
    try:
        total = checked_job_count(
            args.manifest, state_dir, allow_outside_files=args.allow_outside_files
        )
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot read manifest {args.manifest}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    placed = {"--state": args.state, "--json-logs": args.json_logs}
    jobs = partial(read_manifest, args.manifest, allow_outside_files=args.allow_outside_files)
    check_apart_from_outputs(output_dir, placed, jobs)  # ConfigError: main says it
    with ExitStack() as stack:
        api = _api_config(args, stack)
        if args.attempt_timeout is not None:
            api = dataclasses.replace(api, attempt_timeout=args.attempt_timeout)
        given = {
            "shutdown_grace": args.shutdown_grace,
            "concurrency": args.concurrency,
            "create_rate": args.rate_limit,
            "read_rate": args.read_rate_limit,
            "prediction_retries": args.max_retries,
            "poll_interval": args.poll_interval,
        }
        config = EngineConfig(
            api=api,
            output_dir=output_dir,
            state_path=args.state,
            job_timeout=args.job_timeout,
            deadline=args.deadline,
            max_predictions=args.max_predictions,
            max_predict_seconds=args.max_predict_seconds,
            retry_failed=args.retry_failed,
            only=frozenset(args.only),
            cancel_on_exit=args.cancel_on_exit,
            **{name: value for name, value in given.items() if value is not None},
        )
        summary = _run_batch(args, config, total, live=live)
    if summary is None:
        return EXIT_USAGE
    _print_summary(summary, config, total)
    return summary.exit_code


def _run_batch(
    args: argparse.Namespace, config: EngineConfig, total: int, *, live: bool
) -> RunSummary | None:
    """Run the batch; None when the configuration (token, auth) makes it impossible."""
    problem: BaseException
    try:
        config.api.require_token()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    try:
        return anyio.run(_run_async, args, config, Progress(total, config.create_rate, live=live))
    except* (AuthenticationError, ConfigError, StorageError) as group:
        problem = _first(group)
    except* OSError as group:  # a report the disk refused, say: one line, not a traceback
        error = _first(group)
        assert isinstance(error, OSError)
        problem = ConfigError(f"cannot write {error.filename or ''}: {error.strerror or error}")
    print(f"error: {problem}", file=sys.stderr)
    return None


def _first(error: BaseException) -> BaseException:
    """Return the first error inside nested groups (one task group per layer of the run)."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _validate(args: argparse.Namespace) -> int:
    from engine._validate import validate_manifest  # noqa: PLC0415

    configure_logging(json=not sys.stderr.isatty(), file=None)
    output_dir = args.output_dir or default_output_dir(args.manifest)
    check_paths(reads={"the manifest": args.manifest, "--state": args.state}, writes={})
    with ExitStack() as stack:
        api = _api_config(args, stack)
        given = {"read_rate": args.read_rate_limit}
        config = EngineConfig(
            api=api,
            output_dir=output_dir,
            state_path=args.state,
            **{name: value for name, value in given.items() if value is not None},
        )
        try:
            api.require_token()
            plan = anyio.run(validate_manifest, args.manifest, config)
        except (ConfigError, AuthenticationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    print(f"{args.manifest}: {plan.jobs} jobs, {plan.already_done} already done")
    for model, count in sorted(plan.by_model.items()):
        print(f"  {count:>6}  {model}")
    for problem in plan.problems:
        print(f"error: {problem}", file=sys.stderr)
    if plan.problems:
        print(f"{len(plan.problems)} problem(s); nothing was run", file=sys.stderr)
        return EXIT_USAGE
    print("ok: nothing was run")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    journal = resolve_journal(args.target, args.state, args.output_dir)
    check_paths(reads={"the journal": journal}, writes={})
    if not journal.exists():
        print(f"error: no journal at {journal}", file=sys.stderr)
        return EXIT_USAGE
    report = status_report(journal)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_status(report)
    unfinished = sum(n for s, n in report["by_status"].items() if s != "done")
    return EXIT_FAILED if unfinished else EXIT_OK


def _export(args: argparse.Namespace) -> int:
    journal = resolve_journal(args.manifest, args.state, args.output_dir)
    reads = {"the manifest": args.manifest, "the journal": journal}
    check_paths(reads=reads, writes={"--output": args.output})
    try:
        replay = load_journal(journal)
        rows = export_rows(args.manifest, replay)
        if args.output is None:
            count = write_export(rows, args.format, sys.stdout)
        else:
            with args.output.open("w", newline="") as out:
                count = write_export(rows, args.format, out)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exported {count} files", file=sys.stderr)
    return EXIT_OK


async def _run_async(
    args: argparse.Namespace, config: EngineConfig, progress: Progress
) -> RunSummary:
    manifest, control = args.manifest, RunControl()
    log.info(
        "run.started",
        manifest=str(manifest),
        jobs=progress.total,
        output_dir=str(config.output_dir),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, control, config, tg.cancel_scope)
        tg.start_soon(progress.run)
        summary = await run_jobs(
            # checked_job_count read the whole file (or its stamp vouches for it).
            lambda: read_manifest(
                manifest, trust_earlier_check=True, allow_outside_files=args.allow_outside_files
            ),
            config,
            control=control,
            on_event=progress.record,
        )
        tg.cancel_scope.cancel()
    return summary


async def _handle_signals(
    control: RunControl, config: EngineConfig, scope: anyio.CancelScope
) -> None:
    """First signal: stop creating and drain. Second: cancel in-flight predictions.

    Either way the run ends within ``config.shutdown_grace`` seconds plus cleanup.
    """
    cancel_on_exit = config.cancel_on_exit
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            name = signal.Signals(signum).name
            if count == 1 and not cancel_on_exit:
                print(
                    f"\n{name}: no new predictions; finishing downloads "
                    f"(stopping in at most {config.shutdown_grace:g} s). "
                    "Press Ctrl-C again to cancel running predictions.",
                    file=sys.stderr,
                )
                control.interrupt(name)
            elif count <= 2:
                print(f"\n{name}: canceling running predictions on Replicate.", file=sys.stderr)
                control.cancel(name)
            else:
                scope.cancel()
                return


def _api_config(args: argparse.Namespace, stack: ExitStack) -> ApiConfig:
    if not args.emulator:
        return ApiConfig.from_env(os.environ)
    _require_emulator_extra()
    from engine.emulator import EmulatorConfig, EmulatorServer  # noqa: PLC0415

    server = stack.enter_context(EmulatorServer(EmulatorConfig()))
    print(f"emulator: serving the Replicate API at {server.base_url}", file=sys.stderr)
    return ApiConfig(token=Secret(server.token), base_url=server.base_url, ca_file=server.ca_file)


_EMULATOR_STACK = ("starlette", "uvicorn", "trustme")


def _require_emulator_extra() -> None:
    """Exit 2 with one line naming the extra when the emulator's web stack is missing."""
    missing = [name for name in _EMULATOR_STACK if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: the emulator needs {', '.join(missing)}: "
            "pip install 'replicate-batch-engine[emulator]'",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)


def _print_summary(summary: RunSummary, config: EngineConfig, total: int) -> None:
    from engine._display import render_summary  # noqa: PLC0415

    # With --only, the run is meant to reach a subset: the manifest's size says nothing.
    render_summary(summary, config.output_dir, manifest_jobs=None if config.only else total)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
