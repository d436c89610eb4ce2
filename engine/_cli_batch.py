"""The commands that work a manifest: ``run`` (and ``run --dry-run``) and ``validate``."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import click
from rich.console import Console

from engine._cli_cancel import cancel_hint, name_left_running
from engine._cli_inspect import write_gallery
from engine._cli_options import (
    allow_outside_files,
    embed_metadata,
    emulator_flag,
    epilog,
    logging_options,
    manifest_argument,
    no_sidecars,
    output_dir,
    prices,
    run_folder,
    setup_logging,
    state,
)
from engine._cli_redis import run_on_redis
from engine._cli_run import run_batch
from engine._cli_stop import (
    StderrConsole,
    Stop,
    checked_api_config,
    checked_prices,
    checked_total,
    error_line,
    reader_may_leave,
    said_if_read,
    stdout_reader_gone,
)
from engine._cluster._args import lease_options, redis_options, workers_option
from engine._config import EngineConfig, default_output_dir, journal_path
from engine._display import Progress, render_summary
from engine._errors import AuthenticationError, ConfigError, EngineError, StorageError
from engine._hooks import parse_command, run_on_complete
from engine._journal import lock_path
from engine._paths import InputsApart, check_apart_from_outputs, check_paths, engine_files
from engine._precheck import check_only_ids
from engine._redact import redact
from engine._report import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine._settings import (
    api_settings,
    bounded,
    config_option,
    given_settings,
    ignored_variables,
    option,
    setting_options,
    settings_file,
)
from engine._status import check_default_folder
from engine._wording import plural
from jobs import ENGINE_FILES, ManifestError, check_manifest, read_manifest

__all__ = ["run", "validate"]


def _split_only(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> frozenset[str]:
    parts = [part.strip() for item in value for part in item.split(",")]
    if "" in parts:  # --only "" must not become "all jobs", nor "a," a silent typo
        raise click.BadParameter(f"an empty id in {', '.join(map(repr, value))}; name a job id")
    return frozenset(parts)


@click.command(
    short_help="Run a YAML or JSONL manifest; run it again to resume.",
    epilog=epilog(
        "replicate-batch run manifests/example.yaml --emulator",
        "replicate-batch run night.jsonl --concurrency 8 --max-predictions 500 \\\n"
        "--log-file night.log",
        "REPLICATE_BATCH_CONCURRENCY=4 replicate-batch run night.jsonl \\\n--only a,b --only c",
        "replicate-batch run night.jsonl --redis redis://host:6379/0 --run night \\\n--workers 3",
        "replicate-batch run night.jsonl --on-complete 'notify-send \"batch done\"'",
        codes_of="run",
    ),
)
@manifest_argument
@output_dir
@state
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
@emulator_flag
@option(
    "--dry-run", is_flag=True, show_default="off", help="Validate and print the plan; run nothing."
)
@prices("YAML price table (model/hardware -> price per unit): show money, allow --max-spend.")
@option(
    "--max-spend",
    type=bounded(float, 0, inclusive=False),
    default=None,
    show_default="none",
    metavar="AMOUNT",
    help="Stop creating predictions once the priced spend reaches AMOUNT (needs --prices).",
)
@embed_metadata
@no_sidecars
@option(
    "--no-gallery",
    "no_gallery",
    is_flag=True,
    show_default="gallery on",
    help="Do not write index.html beside the outputs at the end of the run.",
)
@allow_outside_files
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
@logging_options
@click.pass_context
def run(ctx: click.Context, /, manifest: Path, **options: Any) -> int:
    """Run a YAML or JSONL manifest; run it again to resume.

    Finished jobs are skipped, journaled predictions re-attached, nothing is paid twice.
    Ctrl-C once drains (no new creates; running predictions finish and download), twice
    cancels them on Replicate, three times exits at once; what is left running is named
    with the 'cancel' command that stops it.
    With --redis, other machines join with 'worker' (see docs/scale-out.md).
    """
    for warning in ignored_variables(os.environ):
        click.echo(warning, err=True)
    output_dir = options["output_dir"] or default_output_dir(manifest)
    if options["output_dir"] is None and options["state"] is None:
        check_default_folder(manifest)  # ConfigError: main says it, before any call
    if options["redis_url"] or options["run_name"]:
        return run_on_redis(ctx, manifest, output_dir, options)
    if options["dry_run"]:
        return _validate(manifest, output_dir, options, given_settings(ctx))
    if options["max_spend"] is not None and options["prices"] is None:
        raise Stop("--max-spend needs --prices FILE")
    if options["on_complete"] is not None:
        try:
            parse_command(options["on_complete"])
        except ValueError as exc:
            raise Stop(f"--on-complete: {exc}") from None
    outside = options["allow_outside_files"]
    state = options["state"]
    placed = {
        "--state": state,
        "the journal's lock": None if state is None else lock_path(state),
        "--log-file": options["log_file"],
        "--json-logs": options["json_logs"],
    }
    journal = journal_path(output_dir, state)
    check_paths(
        reads={
            "the manifest": manifest,
            "--prices": options["prices"],
            "--config": settings_file(ctx),
        },
        writes={
            **placed,
            "--state": journal,
            "the journal's lock": lock_path(journal),
            "the report": output_dir / ENGINE_FILES.report,
        },
        output_dir=output_dir,
        kept={} if options["no_gallery"] else {"the gallery": output_dir / ENGINE_FILES.gallery},
    )
    price_table = checked_prices(options["prices"])
    live = sys.stderr.isatty() and not options["quiet"]
    console = StderrConsole()
    if options["only"]:  # a usage error: before the job count leaves its stamp
        try:
            check_only_ids(manifest, options["only"], allow_outside_files=outside)
        except ManifestError as exc:
            raise Stop(str(exc)) from None
    state_dir = journal_path(output_dir, options["state"]).parent
    # No @file input may lie where the run writes: its output would replace the user's file.
    kept = {**placed, "the journal": journal, **engine_files(output_dir, journal)}
    inputs = InputsApart(output_dir, kept)
    total = checked_total(manifest, state_dir, allow_outside_files=outside, local_file=inputs)
    # Before a log file is opened: one placed where a job's outputs land is refused.
    jobs = partial(read_manifest, manifest, allow_outside_files=outside)
    check_apart_from_outputs(output_dir, placed, jobs)  # ConfigError: main says it
    inputs.check(jobs)
    with ExitStack() as stack:
        setup_logging(stack, console, options, terminal_level=logging.WARNING if live else None)
        api = checked_api_config(options["emulator"], stack, console)
        try:
            config = EngineConfig(
                api=dataclasses.replace(api, **api_settings(ctx)),
                output_dir=output_dir,
                state_path=options["state"],
                only=options["only"],
                sidecars=not options["no_sidecars"],
                embed_metadata=options["embed_metadata"],
                prices=price_table,
                max_spend=options["max_spend"],
                manifest=manifest,
                **given_settings(ctx),
            )
        except ConfigError as exc:
            raise Stop(str(exc)) from None
        if config.embed_metadata:
            _check_images_extra(console)
        progress = Progress(total, config.create_rate, live=live, console=console)
        try:
            summary = run_batch(
                manifest, config, progress, show=not options["quiet"], allow_outside_files=outside
            )
        except StorageError as exc:
            if exc.summary is None or exc.summary.exit_code == EXIT_USAGE:
                raise Stop(str(exc)) from None  # before the first create: nothing was sent
            # Mid-run: the run drained; what it did, and what still runs, are shown below.
            summary = exc.summary
            with said_if_read():
                click.echo(f"error: {exc}", err=True)
        except EngineError as exc:
            raise Stop(str(exc)) from None
    # With --only, the run is meant to reach a subset: the manifest's size says nothing.
    reader_left = False
    try:
        with reader_may_leave():
            render_summary(summary, config.output_dir, manifest_jobs=None if config.only else total)
    except Stop:  # the gallery, what still runs and --on-complete come all the same
        reader_left = True
    # Each line below may find its reader gone (``run ... 2>&1 | head``): the next is
    # still tried, as what still runs must be named where it can be.
    if not options["no_gallery"]:
        with said_if_read():
            write_gallery(manifest, config.output_dir, config.journal_path, quiet=options["quiet"])
    if summary.stopped_by_credit:
        with said_if_read():
            click.echo(
                f"stopped: the account has no credit (402); {plural(summary.deferred, 'job')} "
                "not started stay pending: add credit and run the same command again",
                err=True,
            )
    if summary.interrupted or summary.deferred:
        # Whatever still runs (and bills) is named, with the command that stops it.
        hint = cancel_hint(
            ctx.find_root().info_name or "replicate-batch",
            manifest,
            options["output_dir"],
            options["state"],
        )
        with said_if_read():
            name_left_running(config.journal_path, hint)
    if options["on_complete"] is not None:
        report = config.output_dir / "report.json"
        problem = run_on_complete(options["on_complete"], report, summary.exit_code)
        if problem is not None:
            with said_if_read():
                click.echo(f"warning: {problem}", err=True)
    return EXIT_BROKEN_PIPE if reader_left or stdout_reader_gone() else summary.exit_code


@click.command(
    short_help="Check every input against its model's schema; run nothing.",
    epilog=epilog(
        "replicate-batch validate night.jsonl",
        "replicate-batch validate night.jsonl --output-dir out/ --read-rate-limit 600",
        "replicate-batch run night.jsonl --dry-run",
        codes_of="validate",
    ),
)
@manifest_argument
@run_folder
@state
@setting_options("read-rate-limit")
@prices("YAML price table: estimate the cost of the pending jobs.")
@config_option()
@emulator_flag
@allow_outside_files
@logging_options
@click.pass_context
def validate(ctx: click.Context, /, manifest: Path, **options: Any) -> int:
    """Check every job's input against its model's schema; run nothing."""
    output_dir = options["output_dir"] or default_output_dir(manifest)
    if options["output_dir"] is None and options["state"] is None:
        check_default_folder(manifest)  # as run --dry-run does
    return _validate(manifest, output_dir, options, given_settings(ctx))


def _validate(
    manifest: Path, output_dir: Path, options: dict[str, Any], settings: dict[str, Any]
) -> int:
    from engine._validate import validate_manifest  # noqa: PLC0415

    check_paths(
        reads={"the manifest": manifest, "--state": options["state"]},
        writes={"--log-file": options["log_file"], "--json-logs": options["json_logs"]},
    )
    # The manifest's own mistakes first: they need no token, no emulator and no network.
    summary = check_manifest(manifest, allow_outside_files=options["allow_outside_files"])
    if not summary.ok:
        for error in summary.errors:
            click.echo(error_line(str(error)), err=True)
        click.echo(
            f"{plural(len(summary.errors), 'problem')} in the manifest; nothing was run", err=True
        )
        return EXIT_USAGE
    console = StderrConsole()
    with ExitStack() as stack:
        setup_logging(stack, console, options, terminal_level=logging.WARNING)
        api = checked_api_config(options["emulator"], stack, console)
        read_rate = settings.get("read_rate")
        config = EngineConfig(
            api=api,
            output_dir=output_dir,
            state_path=options["state"],
            prices=checked_prices(options.get("prices")),
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
            raise Stop(str(exc)) from None
        except EngineError as exc:  # the API could not answer (network, server)
            raise Stop(f"cannot validate: {exc}", EXIT_FAILED) from None
    secret = api.token.reveal() if api.token else ""
    click.echo(f"{manifest}: {plural(plan.jobs, 'job')}, {plan.already_done} already done")
    for model, jobs in sorted(plan.by_model.items()):
        click.echo(redact(f"  {jobs:>6}  {model}", secret=secret))
    for problem in plan.problems:
        click.echo(error_line(problem, secret=secret), err=True)
    if plan.estimate is not None:
        _print_estimate(plan.estimate.to_json())
    if plan.problems:
        click.echo(f"{plural(len(plan.problems), 'problem')}; nothing was run", err=True)
        return EXIT_USAGE
    click.echo("ok: nothing was run")
    return EXIT_OK


def _print_estimate(estimate: dict[str, object]) -> None:
    jobs, currency = estimate["estimated_jobs"], estimate["currency"]
    assert isinstance(jobs, int)
    click.echo(
        f"estimated cost: {estimate['estimated_cost']:.4f} {currency} for "
        f"{plural(jobs, 'pending job')}"
    )
    unestimated = estimate["unestimated_jobs"]
    assert isinstance(unestimated, dict)
    for model, jobs_left in sorted(unestimated.items()):
        jobs_text = plural(jobs_left, "job")
        click.echo(f"  not estimated: {jobs_text} of {model} (no price, or no earlier timing)")


def _check_images_extra(console: Console) -> None:
    from engine._metadata import IMAGES_EXTRA_HINT, images_extra_available  # noqa: PLC0415

    if not images_extra_available():
        console.print(f"note: PNG outputs get their metadata; {IMAGES_EXTRA_HINT}", markup=False)
