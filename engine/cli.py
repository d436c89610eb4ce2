"""The command line: the only place that reads flags and the environment.

Exit codes (`RunSummary.exit_code` decides a run's): 0 every job done, 1 some jobs
failed or were canceled, 2 usage, manifest or configuration error, 3 stopped by a budget
or the deadline, 130 interrupted, 141 the reader of standard output went away
(``export | head``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import click
from rich.console import Console

from engine._cli_cancel import cancel_command, cancel_hint, name_left_running
from engine._cli_run import api_config, run_batch
from engine._cluster._args import (
    REDIS_EXTRA_HINT,
    RUN_ONLY_FLAGS,
    lease_options,
    redis_options,
    workers_option,
)
from engine._config import (
    ApiConfig,
    EngineConfig,
    default_output_dir,
    journal_path,
)
from engine._console import configure_cli_logging
from engine._display import Progress, render_summary
from engine._errors import AuthenticationError, ConfigError, EngineError
from engine._hooks import parse_command, run_on_complete
from engine._journal import load_journal
from engine._paths import check_apart_from_outputs, check_paths
from engine._precheck import check_only_ids, checked_job_count
from engine._pricing import PriceTable, load_prices
from engine._redact import redact
from engine._report import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
)
from engine._settings import (
    RUN_SETTINGS,
    api_settings,
    config_option,
    given_settings,
    option,
    setting_options,
)
from engine._status import export_rows, print_status, resolve_journal, status_report, write_export
from jobs import ENGINE_FILES, ManifestError, read_manifest

__all__ = ["main"]

EXIT_BROKEN_PIPE = 141
COMPLETE_VAR = "_REPLICATE_BATCH_COMPLETE"


_EXIT_CODES = f"""
\b
Exit codes:
  {EXIT_OK:<4} every job done
  {EXIT_FAILED:<4} some jobs failed or were canceled
  {EXIT_USAGE:<4} usage, manifest or configuration error (nothing was sent)
  {EXIT_STOPPED:<4} stopped by a budget (--max-*) or the --deadline; run again to go on
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C or SIGTERM)"""


def _epilog(*examples: str, codes: str = _EXIT_CODES) -> str:
    return "\b\nExamples:\n" + "\n".join(f"  {e}" for e in examples) + "\n" + codes


class _Stop(Exception):  # noqa: N818 - a control-flow signal, not an error type
    """End the command with an exit code after printing one line."""

    def __init__(self, message: str | None, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, standalone_mode=False, complete_var=COMPLETE_VAR)
    except click.exceptions.Exit as exc:  # --help, --version, completion
        return exc.exit_code
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and not args:  # no command at all: show what there is
            click.echo(ctx.get_help(), err=True)
            return EXIT_USAGE
        # One line, no usage dump: what is wrong and where the help is.
        where = ctx.command_path if ctx is not None else "replicate-batch"
        click.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        return EXIT_USAGE
    except click.Abort:
        return EXIT_INTERRUPTED
    except _Stop as stop:
        if stop.message:
            click.echo(f"error: {redact(stop.message)}", err=True)
        return stop.code
    except ConfigError as exc:  # base URL, token, paths: one line, before anything is paid
        click.echo(f"error: {redact(str(exc))}", err=True)
        return EXIT_USAGE
    return result if isinstance(result, int) else EXIT_OK


@contextmanager
def _reader_may_leave() -> Iterator[None]:
    """End quietly with 141 when the reader of stdout goes away (``export | head``)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the flush at interpreter exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise _Stop(None, EXIT_BROKEN_PIPE) from None


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_epilog(
        "replicate-batch run manifests/example.yaml --emulator",
        "replicate-batch status manifests/example.yaml",
        "replicate-batch export manifests/example.yaml --format csv > outputs.csv",
    )
    + """

\b
Settings: a flag beats its REPLICATE_BATCH_<FLAG> variable (REPLICATE_BATCH_CONCURRENCY=8),
which beats the --config file (or REPLICATE_BATCH_CONFIG), which beats the default.
\b
Shell completion (bash; use zsh_source or fish_source for those shells):
  eval "$(_REPLICATE_BATCH_COMPLETE=bash_source replicate-batch)\"""",
)
@click.version_option(package_name="replicate-batch-engine", message="%(prog)s %(version)s")
def cli() -> None:
    """Run thousands of Replicate predictions: bounded, rate-limited, resumable.

    The API token comes from REPLICATE_API_TOKEN (or REPLICATE_API_KEY); REPLICATE_BASE_URL
    and SSL_CERT_FILE are read as the replicate client reads them.
    """


# Options shared by several commands.
_manifest = click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
_output_dir = option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    show_default="outputs/<manifest name>",
    help="Where outputs, journal.jsonl and report.json go.",
)
_state = option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default="<output dir>/journal.jsonl",
    help="The journal (the resumable state file).",
)
_emulator = option(
    "--emulator",
    is_flag=True,
    show_default="off",
    help="Start the built-in emulator and run against it (no token, no network).",
)
_allow_outside_files = option(
    "--allow-outside-files",
    is_flag=True,
    show_default="off",
    help="Let @file inputs name files outside the manifest's folder (a manifest you trust).",
)


def _logging_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        option(
            "-q",
            "--quiet",
            is_flag=True,
            show_default="off",
            help="Print only errors and the summary.",
        ),
        option("-v", "--verbose", is_flag=True, show_default="off", help="Print debug events too."),
        option(
            "--log-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            show_default="none",
            help="Append every event to PATH as readable text.",
        ),
        option(
            "--json-logs",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            show_default="none",
            metavar="PATH",
            help="Append every event to PATH as JSON lines.",
        ),
    ]
    for add in reversed(options):
        func = add(func)
    return func


def _split_only(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> frozenset[str]:
    return frozenset(part.strip() for item in value for part in item.split(",") if part.strip())


@cli.command(
    epilog=_epilog(
        "replicate-batch run manifests/example.yaml --emulator",
        "replicate-batch run night.jsonl --concurrency 8 --max-predictions 500 --log-file n.log",
        "REPLICATE_BATCH_CONCURRENCY=4 replicate-batch run night.jsonl --only a,b --only c",
        "replicate-batch run night.jsonl --redis redis://host:6379/0 --run night --workers 3",
        "replicate-batch run night.jsonl --on-complete 'notify-send \"batch done\"'",
    )
)
@_manifest
@_output_dir
@_state
@setting_options()
@option(
    "--only",
    multiple=True,
    metavar="ID[,ID...]",
    callback=_split_only,
    show_default="all jobs",
    help="Run only these job ids; repeat it or give a comma list.",
)
@config_option()
@_emulator
@option(
    "--dry-run", is_flag=True, show_default="off", help="Validate and print the plan; run nothing."
)
@option(
    "--prices",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default="none",
    metavar="FILE",
    help="YAML price table (model/hardware -> price per unit): show money, allow --max-spend.",
)
@option(
    "--max-spend",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    show_default="none",
    metavar="AMOUNT",
    help="Stop creating predictions once the priced spend reaches AMOUNT (needs --prices).",
)
@option(
    "--embed-metadata",
    is_flag=True,
    show_default="off",
    help="Write the prompt and parameters into PNG (JPEG/WebP with the images extra) outputs.",
)
@option(
    "--no-sidecars",
    "no_sidecars",
    is_flag=True,
    show_default="sidecars on",
    help="Do not write {stem}.info.json (provenance) beside each job's outputs.",
)
@option(
    "--on-changed",
    type=click.Choice(["rerun", "report"]),
    default=None,
    show_default="rerun",
    help="A job with an explicit id whose model or input changed since it was journaled: "
    "run it again (old files kept as ID.before-<prediction>.ext) or only report it (exit 1).",
)
@option(
    "--no-gallery",
    "no_gallery",
    is_flag=True,
    show_default="gallery on",
    help="Do not write index.html beside the outputs at the end of the run.",
)
@_allow_outside_files
@redis_options(required=False, what="Share the run with other processes through Redis")
@workers_option
@lease_options
@option(
    "--on-complete",
    metavar="CMD",
    default=None,
    envvar="REPLICATE_BATCH_ON_COMPLETE",
    show_envvar=True,
    show_default="none",
    help="Run CMD once at the end with the report's path as its last argument (and in "
    "REPLICATE_BATCH_REPORT, the exit code in REPLICATE_BATCH_EXIT_CODE); no shell. "
    "Its failure is a warning.",
)
@_logging_options
@click.pass_context
def run(ctx: click.Context, /, manifest: Path, **options: Any) -> int:
    """Run a YAML or JSONL manifest; run it again to resume.

    Finished jobs are skipped, journaled predictions re-attached, nothing is paid twice.
    Ctrl-C once drains (no new creates; running predictions finish and download), twice
    cancels them on Replicate, three times exits at once; what is left running is named
    with the 'cancel' command that stops it.
    With --redis, other machines join with 'worker' (see docs/scale-out.md).
    """
    output_dir = options["output_dir"] or default_output_dir(manifest)
    if options["redis_url"] or options["run_name"]:
        return _run_on_redis(ctx, manifest, output_dir, options)
    if options["dry_run"]:
        return _validate(manifest, output_dir, options, given_settings(ctx))
    if options["max_spend"] is not None and options["prices"] is None:
        raise _Stop("--max-spend needs --prices FILE")
    if options["on_complete"] is not None:
        try:
            parse_command(options["on_complete"])
        except ValueError as exc:
            raise _Stop(f"--on-complete: {exc}") from None
    outside = options["allow_outside_files"]
    placed = {
        "--state": options["state"],
        "--log-file": options["log_file"],
        "--json-logs": options["json_logs"],
    }
    check_paths(
        reads={"the manifest": manifest},
        writes={
            **placed,
            "--state": journal_path(output_dir, options["state"]),
            "the report": output_dir / ENGINE_FILES.report,
        },
        output_dir=output_dir,
    )
    prices = _load_prices(options["prices"])
    live = sys.stderr.isatty() and not options["quiet"]
    console = Console(stderr=True)
    state_dir = journal_path(output_dir, options["state"]).parent
    total = _checked_total(manifest, state_dir, allow_outside_files=outside)
    if options["only"]:
        try:
            check_only_ids(manifest, options["only"], allow_outside_files=outside)
        except ManifestError as exc:
            raise _Stop(str(exc)) from None
    # Before a log file is opened: one placed where a job's outputs land is refused.
    jobs = partial(read_manifest, manifest, allow_outside_files=outside)
    check_apart_from_outputs(output_dir, placed, jobs)  # ConfigError: main says it
    with ExitStack() as stack:
        _setup_logging(stack, console, options, terminal_level=logging.WARNING if live else None)
        api = _api_config(options["emulator"], stack, console)
        try:
            config = EngineConfig(
                api=dataclasses.replace(api, **api_settings(ctx)),
                output_dir=output_dir,
                state_path=options["state"],
                only=options["only"],
                sidecars=not options["no_sidecars"],
                embed_metadata=options["embed_metadata"],
                prices=prices,
                max_spend=options["max_spend"],
                manifest=manifest,
                **({"on_changed": options["on_changed"]} if options["on_changed"] else {}),
                **given_settings(ctx),
            )
        except ConfigError as exc:
            raise _Stop(str(exc)) from None
        if config.embed_metadata:
            _check_images_extra(console)
        progress = Progress(total, config.create_rate, live=live, console=console)
        try:
            summary = run_batch(
                manifest, config, progress, show=not options["quiet"], allow_outside_files=outside
            )
        except EngineError as exc:
            raise _Stop(str(exc)) from None
    # With --only, the run is meant to reach a subset: the manifest's size says nothing.
    render_summary(summary, config.output_dir, manifest_jobs=None if config.only else total)
    if not options["no_gallery"]:
        _write_gallery(manifest, config.output_dir, config.journal_path, quiet=options["quiet"])
    if summary.interrupted or summary.deferred:
        # Whatever still runs (and bills) is named, with the command that stops it.
        hint = cancel_hint(
            ctx.find_root().info_name or "replicate-batch",
            manifest,
            options["output_dir"],
            options["state"],
        )
        name_left_running(config.journal_path, hint)
    if options["on_complete"] is not None:
        report = config.output_dir / "report.json"
        problem = run_on_complete(options["on_complete"], report, summary.exit_code)
        if problem is not None:
            click.echo(f"warning: {problem}", err=True)
    return summary.exit_code


def _cluster_cli() -> Any:
    """Import the Redis commands (and so redis-py): only a command that uses --redis does."""
    try:
        from engine._cluster import _cli  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name != "redis" and not (exc.name or "").startswith("redis."):
            raise
        raise _Stop(REDIS_EXTRA_HINT) from None
    return _cli


def _cluster_call(func: Callable[..., int], *args: Any, **kwargs: Any) -> int:
    try:
        return func(*args, **kwargs)
    except (AuthenticationError, ConfigError) as exc:
        raise _Stop(str(exc)) from None


def _cluster_options(options: dict[str, Any]) -> Any:
    from engine._cluster._worker import ClusterOptions  # noqa: PLC0415 - imports redis

    return ClusterOptions(
        options["redis_url"], options["run_name"], lease=options["lease"], settle=options["settle"]
    )


def _run_on_redis(
    ctx: click.Context, manifest: Path, output_dir: Path, options: dict[str, Any]
) -> int:
    """``run --redis``: submit the manifest, work it with --workers processes here."""
    if not (options["redis_url"] and options["run_name"]):
        raise _Stop("--redis needs --run NAME (and --run needs --redis URL)")
    settings = given_settings(ctx)
    given = settings | api_settings(ctx)
    fields = {s.param: s.field for s in RUN_SETTINGS}
    refused = [
        flag
        for name, flag in RUN_ONLY_FLAGS.items()
        if (given.get(fields[name]) if name in fields else options.get(name))
    ]
    if refused:
        raise _Stop(f"{', '.join(refused)} cannot be used with --redis yet")
    cluster = _cluster_cli()
    with ExitStack() as stack:
        cluster.configure_cluster_logging(
            stack,
            quiet=options["quiet"],
            verbose=options["verbose"],
            json_logs=options["json_logs"],
        )
        total = _checked_total(manifest, journal_path(output_dir).parent)
        config = _engine_config(
            output_dir=output_dir,
            sidecars=not options["no_sidecars"],
            embed_metadata=options["embed_metadata"],
            **settings,
        )
        worker_args = [
            *(["-q"] if options["quiet"] else []),
            *(["-v"] if options["verbose"] else []),
            *(["--json-logs", str(options["json_logs"])] if options["json_logs"] else []),
        ]
        return _cluster_call(
            cluster.run_on_redis,
            manifest,
            config,
            _cluster_options(options),
            workers=options["workers"],
            total=total,
            worker_args=worker_args,
        )


def _engine_config(**kwargs: Any) -> EngineConfig:
    try:
        return EngineConfig(api=ApiConfig.from_env(os.environ), **kwargs)
    except ConfigError as exc:
        raise _Stop(str(exc)) from None


@cli.command(
    epilog=_epilog(
        "replicate-batch worker --redis redis://host:6379/0 --run night --output-dir out/",
        "replicate-batch worker --redis redis://host:6379/0 --run night --output-dir out/ "
        "--concurrency 8 --json-logs worker.log",
        codes="""
\b
Exit codes:
  0    the run is complete: every job this worker took is done
  1    some jobs this worker took are not done (failed, canceled, deferred)
  2    usage or configuration error, or Redis cannot be reached
  130  interrupted (Ctrl-C or SIGTERM here, or on the run's submitting process)""",
    )
)
@redis_options(required=True, what="The Redis the run is coordinated through")
@option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Where this machine writes outputs (and its own journal under .cluster/).",
)
@setting_options(
    "concurrency",
    "rate-limit",
    "read-rate-limit",
    "max-retries",
    "poll-interval",
    "job-timeout",
    "retry-failed",
)
@config_option()
@option(
    "--embed-metadata",
    is_flag=True,
    show_default="off",
    help="Write the prompt and parameters into PNG (JPEG/WebP with the images extra) outputs.",
)
@option(
    "--no-sidecars",
    "no_sidecars",
    is_flag=True,
    show_default="sidecars on",
    help="Do not write {stem}.info.json (provenance) beside each job's outputs.",
)
@lease_options
@option("-q", "--quiet", is_flag=True, show_default="off", help="Log only errors.")
@option("-v", "--verbose", is_flag=True, show_default="off", help="Log debug events too.")
@option(
    "--json-logs",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default="standard error",
    metavar="PATH",
    help="Append the JSON log lines to PATH.",
)
@click.pass_context
def worker(ctx: click.Context, /, **options: Any) -> int:
    """Join a run coordinated by Redis: take its jobs until every one has an outcome.

    Start the run with 'run MANIFEST --redis URL --run NAME'; a worker may join before or
    after. The rate limits are the account's, shared by every worker through Redis.
    """
    cluster = _cluster_cli()
    with ExitStack() as stack:
        cluster.configure_cluster_logging(
            stack,
            quiet=options["quiet"],
            verbose=options["verbose"],
            json_logs=options["json_logs"],
        )
        config = _engine_config(
            output_dir=options["output_dir"],
            sidecars=not options["no_sidecars"],
            embed_metadata=options["embed_metadata"],
            **given_settings(ctx),
        )
        result: int = _cluster_call(cluster.serve_on_redis, config, _cluster_options(options))
        return result


@cli.group(
    epilog=_epilog(
        "replicate-batch journal export --redis redis://host:6379/0 --run night "
        "--output night.jsonl",
    )
)
def journal() -> None:
    """Journal tools: write a Redis run's state as a standard journal."""


@journal.command(
    "export",
    epilog=_epilog(
        "replicate-batch journal export --redis redis://host:6379/0 --run night "
        "--output night.jsonl",
        "replicate-batch run night.jsonl --state night.jsonl --output-dir out/",
        codes="""
\b
Exit codes:
  0    the journal was written
  2    usage error, Redis cannot be reached, or the file cannot be written""",
    ),
)
@redis_options(required=True, what="The Redis the run is coordinated through")
@option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    metavar="JOURNAL",
    help="Write the journal here (atomically); 'run --state JOURNAL' resumes from it.",
)
def journal_export(redis_url: str, run_name: str, output: Path) -> int:
    """Write a standard journal of a Redis run: every job's records, no network to Replicate.

    A single-machine 'run --state JOURNAL' then finishes what the cluster started.
    """
    cluster = _cluster_cli()
    result: int = _cluster_call(cluster.export_from_redis, redis_url, run_name, output)
    return result


def _api_config(emulator: bool, stack: ExitStack, console: Console) -> ApiConfig:
    try:
        return api_config(emulator, stack, console)
    except ConfigError as exc:
        raise _Stop(str(exc)) from None


def _checked_total(manifest: Path, state_dir: Path, *, allow_outside_files: bool = False) -> int:
    try:
        return checked_job_count(manifest, state_dir, allow_outside_files=allow_outside_files)
    except ManifestError as exc:
        raise _Stop(str(exc)) from None
    except OSError as exc:
        raise _Stop(f"cannot read manifest {manifest}: {exc.strerror}") from None


def _setup_logging(
    stack: ExitStack, console: Console, options: dict[str, Any], *, terminal_level: int | None
) -> None:
    """Console: errors with -q, debug with -v, else ``terminal_level`` (INFO off a terminal)."""
    if options["quiet"]:
        level = logging.ERROR
    elif options["verbose"]:
        level = logging.DEBUG
    else:
        level = terminal_level if terminal_level is not None else logging.INFO
    configure_cli_logging(
        stack,
        console=console,
        console_level=level,
        text_file=options["log_file"],
        json_file=options["json_logs"],
        file_level=logging.DEBUG if options["verbose"] else logging.INFO,
    )


@cli.command(
    epilog=_epilog(
        "replicate-batch validate night.jsonl",
        "replicate-batch validate night.jsonl --output-dir out/ --read-rate-limit 600",
        "replicate-batch run night.jsonl --dry-run",
        codes="""
\b
Exit codes:
  0    every job's input is valid (nothing was run)
  1    the API could not answer (network, server); nothing was run
  2    a problem in the manifest, the inputs or the configuration""",
    )
)
@_manifest
@_output_dir
@_state
@setting_options("read-rate-limit")
@option(
    "--prices",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default="none",
    metavar="FILE",
    help="YAML price table: estimate the cost of the pending jobs.",
)
@config_option()
@_emulator
@_allow_outside_files
@_logging_options
@click.pass_context
def validate(ctx: click.Context, /, manifest: Path, **options: Any) -> int:
    """Check every job's input against its model's schema; run nothing."""
    output_dir = options["output_dir"] or default_output_dir(manifest)
    return _validate(manifest, output_dir, options, given_settings(ctx))


def _validate(
    manifest: Path, output_dir: Path, options: dict[str, Any], settings: dict[str, Any]
) -> int:
    from engine._validate import validate_manifest  # noqa: PLC0415

    check_paths(
        reads={"the manifest": manifest, "--state": options["state"]},
        writes={"--log-file": options["log_file"], "--json-logs": options["json_logs"]},
    )
    console = Console(stderr=True)
    with ExitStack() as stack:
        _setup_logging(stack, console, options, terminal_level=logging.WARNING)
        api = _api_config(options["emulator"], stack, console)
        read_rate = settings.get("read_rate")
        config = EngineConfig(
            api=api,
            output_dir=output_dir,
            state_path=options["state"],
            prices=_load_prices(options.get("prices")),
            **({"read_rate": read_rate} if read_rate is not None else {}),
        )
        try:
            api.require_token(how=None)
            plan = anyio.run(
                partial(
                    validate_manifest,
                    manifest,
                    config,
                    allow_outside_files=options["allow_outside_files"],
                )
            )
        except (ConfigError, AuthenticationError, ManifestError) as exc:
            raise _Stop(str(exc)) from None
        except EngineError as exc:  # the API could not answer (network, server)
            raise _Stop(f"cannot validate: {exc}", EXIT_FAILED) from None
    click.echo(f"{manifest}: {plan.jobs} jobs, {plan.already_done} already done")
    for model, count in sorted(plan.by_model.items()):
        click.echo(f"  {count:>6}  {model}")
    for problem in plan.problems:
        click.echo(f"error: {problem}", err=True)
    if plan.estimate is not None:
        _print_estimate(plan.estimate.to_json())
    if plan.problems:
        click.echo(f"{len(plan.problems)} problem(s); nothing was run", err=True)
        return EXIT_USAGE
    click.echo("ok: nothing was run")
    return EXIT_OK


@cli.command(
    epilog=_epilog(
        "replicate-batch status manifests/example.yaml",
        "replicate-batch status outputs/example/journal.jsonl --json",
        "replicate-batch status --redis redis://host:6379/0 --run night",
        codes="""
\b
Exit codes:
  0    every job in the journal (or the Redis run) is done
  1    some jobs are not done (running, failed, canceled)
  2    no journal there, or Redis cannot be reached""",
    )
)
@click.argument(
    "target",
    metavar="[MANIFEST_OR_JOURNAL]",
    required=False,
    type=click.Path(path_type=Path, dir_okay=False),
)
@_output_dir
@_state
@option("--json", "as_json", is_flag=True, show_default="off", help="Print the counts as JSON.")
@redis_options(required=False, what="Count the whole run from Redis instead of a journal")
def status(
    target: Path | None,
    *,
    output_dir: Path | None,
    state: Path | None,
    as_json: bool,
    redis_url: str | None,
    run_name: str | None,
) -> int:
    """Count jobs by status and list the failures, from the journal alone (no network).

    With --redis and --run: the whole run's counts, workers and queue, from Redis.
    """
    if redis_url or run_name:
        if not (redis_url and run_name):
            raise _Stop("status --redis needs --run NAME (and --run needs --redis URL)")
        cluster = _cluster_cli()
        with _reader_may_leave():
            return _cluster_call(cluster.status_on_redis, redis_url, run_name, as_json=as_json)
    if target is None:
        raise _Stop("status needs MANIFEST_OR_JOURNAL (or --redis URL --run NAME)")
    journal = resolve_journal(target, state, output_dir)
    check_paths(reads={"the journal": journal}, writes={})
    if not journal.exists():
        raise _Stop(f"no journal at {journal.resolve()}")
    report = status_report(journal, manifest=None if journal == target else target)
    report["journal"] = str(journal.resolve())
    with _reader_may_leave():
        if as_json:
            click.echo(json.dumps(report, indent=2, sort_keys=True))
        else:
            print_status(report)
    unfinished = sum(n for s, n in report["by_status"].items() if s != "done")
    return EXIT_FAILED if unfinished else EXIT_OK


@cli.command(
    epilog=_epilog(
        "replicate-batch cancel night.jsonl --dry-run",
        "replicate-batch cancel night.jsonl",
        "replicate-batch cancel night.jsonl --output-dir out/",
        codes=f"""
\b
Exit codes:
  {EXIT_OK:<4} nothing is left running (all canceled, or nothing was running)
  {EXIT_FAILED:<4} some predictions could not be canceled (listed; run it again)
  {EXIT_USAGE:<4} no journal there, no token, or a usage error""",
    )
)
@click.argument(
    "target", metavar="MANIFEST_OR_JOURNAL", type=click.Path(path_type=Path, dir_okay=False)
)
@_output_dir
@_state
@option(
    "--dry-run",
    is_flag=True,
    show_default="off",
    help="List the predictions that would be canceled; send nothing.",
)
@_logging_options
def cancel(target: Path, **options: Any) -> int:
    """Cancel the predictions the journal shows as still running, so nothing keeps billing.

    For a run that crashed, was killed, or was left with predictions running (a Ctrl-C
    that exited at once): each is canceled on Replicate and journaled as canceled, so a
    re-run skips it (--retry-failed runs it again). A prediction that already finished is
    left for the next run to download.
    """
    journal = resolve_journal(target, options["state"], options["output_dir"])
    if not journal.exists():
        raise _Stop(f"no journal at {journal.resolve()}")
    console = Console(stderr=True)
    with ExitStack() as stack:
        _setup_logging(stack, console, options, terminal_level=logging.WARNING)
        try:
            config = EngineConfig(
                api=ApiConfig.from_env(os.environ),
                output_dir=journal.parent,
                state_path=journal,
            )
            return cancel_command(config, dry_run=options["dry_run"])
        except (ConfigError, AuthenticationError) as exc:
            raise _Stop(str(exc)) from None
        except EngineError as exc:  # the journal cannot be written: nothing was journaled
            raise _Stop(f"cannot cancel: {exc}", EXIT_FAILED) from None


@cli.command(
    epilog=_epilog(
        "replicate-batch export manifests/example.yaml > files.jsonl",
        "replicate-batch export manifests/example.yaml --format csv --output files.csv",
        "replicate-batch export night.jsonl | head -3",
        codes="""
\b
Exit codes:
  0    exported (a done job's files only)
  2    a manifest problem
  141  the reader of standard output went away (export | head): quietly""",
    )
)
@_manifest
@option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Row format.",
)
@_output_dir
@_state
@option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default="standard output",
    help="Write the rows to this file.",
)
def export(
    manifest: Path, fmt: str, output_dir: Path | None, state: Path | None, output: Path | None
) -> int:
    """Print one row per output file, in manifest order: job, prediction, size, sha256."""
    journal = resolve_journal(manifest, state, output_dir)
    check_paths(
        reads={"the manifest": manifest, "the journal": journal}, writes={"--output": output}
    )
    try:
        replay = load_journal(journal)
        rows = export_rows(manifest, replay, output_dir or default_output_dir(manifest))
        if output is None:
            with _reader_may_leave():
                count = write_export(rows, fmt, sys.stdout)
        else:
            with output.open("w", newline="") as out:
                count = write_export(rows, fmt, out)
    except ManifestError as exc:
        raise _Stop(str(exc)) from None
    except OSError as exc:
        raise _Stop(f"{exc.filename}: {exc.strerror}") from None
    click.echo(f"exported {count} files", err=True)
    return EXIT_OK


@cli.command(
    epilog=_epilog(
        "replicate-batch gallery manifests/example.yaml",
        "replicate-batch gallery night.jsonl --output-dir out/",
        codes="""
\b
Exit codes:
  0    index.html written beside the outputs
  2    no journal there, or a manifest problem""",
    )
)
@_manifest
@_output_dir
@_state
def gallery(manifest: Path, output_dir: Path | None, state: Path | None) -> int:
    """Write index.html beside the outputs, from the journal and sidecars (no network)."""
    out = output_dir or default_output_dir(manifest)
    journal = resolve_journal(manifest, state, out)
    if not journal.exists():
        raise _Stop(f"no journal at {journal.resolve()}")
    try:
        _write_gallery(manifest, out, journal)
    except ManifestError as exc:
        raise _Stop(str(exc)) from None
    return EXIT_OK


def _write_gallery(manifest: Path, output_dir: Path, journal: Path, *, quiet: bool = False) -> None:
    """Write index.html; a gallery that cannot be written never fails the run itself."""
    from engine._gallery import write_manifest_gallery  # noqa: PLC0415

    try:
        stats = write_manifest_gallery(manifest, output_dir, journal)
    except OSError as exc:
        click.echo(f"warning: cannot write the gallery in {output_dir}: {exc}", err=True)
        return
    if not quiet:
        click.echo(f"gallery: {stats.path} ({stats.jobs} jobs, {stats.files} files)", err=True)


def _load_prices(path: Path | None) -> PriceTable | None:
    if path is None:
        return None
    try:
        return load_prices(path)
    except ConfigError as exc:
        raise _Stop(str(exc)) from None


def _print_estimate(estimate: dict[str, object]) -> None:
    jobs, currency = estimate["estimated_jobs"], estimate["currency"]
    click.echo(
        f"estimated cost: {estimate['estimated_cost']:.4f} {currency} for {jobs} pending jobs"
    )
    unestimated = estimate["unestimated_jobs"]
    assert isinstance(unestimated, dict)
    for model, count in sorted(unestimated.items()):
        jobs_text = "1 job" if count == 1 else f"{count} jobs"
        click.echo(f"  not estimated: {jobs_text} of {model} (no price, or no earlier timing)")


def _check_images_extra(console: Console) -> None:
    from engine._metadata import IMAGES_EXTRA_HINT, images_extra_available  # noqa: PLC0415

    if not images_extra_available():
        console.print(f"note: PNG outputs get their metadata; {IMAGES_EXTRA_HINT}", markup=False)


@cli.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("emulator_args", nargs=-1, type=click.UNPROCESSED)
def emulator(emulator_args: tuple[str, ...]) -> int:
    """Serve the local Replicate API emulator (its own flags: see 'emulator --help')."""
    from engine.emulator.cli import serve_forever  # noqa: PLC0415 - heavy, only here

    code: int = serve_forever(list(emulator_args))
    return code
