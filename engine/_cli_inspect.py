"""The commands that read a run's journal: ``status``, ``export``, ``gallery``, ``cancel``.

None of them runs a job; only ``cancel`` calls Replicate (to stop what still bills).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import click

from engine._cli_cancel import cancel_command
from engine._cli_options import (
    epilog,
    gallery_folder,
    logging_options,
    manifest_argument,
    run_folder,
    setup_logging,
    state,
)
from engine._cli_redis import cluster_call, cluster_cli
from engine._cli_stop import StderrConsole, Stop, configured_secret, reader_may_leave, said_if_read
from engine._cluster._args import redis_options
from engine._config import ApiConfig, EngineConfig, default_output_dir
from engine._errors import AuthenticationError, ConfigError, EngineError
from engine._journal import load_journal
from engine._paths import check_apart_from_outputs, check_paths, engine_files
from engine._redact import redact
from engine._report import EXIT_FAILED, EXIT_OK
from engine._settings import option
from engine._status import export_rows, print_status, resolve_journal, status_report, write_export
from engine._wording import plural
from jobs import ENGINE_FILES, JobStatus, ManifestError, read_manifest

__all__ = ["cancel", "export", "gallery", "status", "write_gallery"]

_SETTLED = frozenset({JobStatus.DONE, JobStatus.PENDING})  # nothing left to look at


@click.command(
    short_help="Count jobs by status and list the failures (no network).",
    epilog=epilog(
        "replicate-batch status manifests/example.yaml",
        "replicate-batch status outputs/example/journal.jsonl --json",
        "replicate-batch status --redis redis://host:6379/0 --run night",
        codes_of="status",
    ),
)
@click.argument(
    "target",
    metavar="[MANIFEST_OR_JOURNAL]",
    required=False,
    type=click.Path(path_type=Path, dir_okay=False),
)
@run_folder
@state
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
            raise Stop("status --redis needs --run NAME (and --run needs --redis URL)")
        cluster = cluster_cli()
        with reader_may_leave():
            return cluster_call(cluster.status_on_redis, redis_url, run_name, as_json=as_json)
    if target is None:
        raise Stop("status needs MANIFEST_OR_JOURNAL (or --redis URL --run NAME)")
    journal = _journal_of(target, state, output_dir)
    check_paths(reads={"the journal": journal}, writes={})
    try:  # a manifest that never ran: its jobs are all pending
        report = status_report(journal, manifest=None if journal == target else target)
    except ManifestError as exc:
        raise Stop(str(exc)) from None
    except OSError as exc:
        raise Stop(f"{exc.filename}: {exc.strerror}") from None
    report["journal"] = str(journal.resolve())
    secret = configured_secret()
    with reader_may_leave():
        if as_json:
            click.echo(redact(json.dumps(report, indent=2, sort_keys=True), secret=secret))
        else:
            print_status(report, secret=secret)
    # Pending jobs have not run yet: nothing about them needs a look.
    unfinished = sum(n for s, n in report["by_status"].items() if s not in _SETTLED)
    return EXIT_FAILED if unfinished else EXIT_OK


@click.command(
    short_help="Cancel the predictions a run left running on Replicate.",
    epilog=epilog(
        "replicate-batch cancel night.jsonl --dry-run",
        "replicate-batch cancel night.jsonl",
        "replicate-batch cancel night.jsonl --output-dir out/",
        codes_of="cancel",
    ),
)
@click.argument(
    "target", metavar="MANIFEST_OR_JOURNAL", type=click.Path(path_type=Path, dir_okay=False)
)
@run_folder
@state
@option(
    "--dry-run",
    is_flag=True,
    show_default="off",
    help="List the predictions that would be canceled; send nothing.",
)
@logging_options
def cancel(target: Path, **options: Any) -> int:
    """Cancel the predictions the journal shows as still running, so nothing keeps billing.

    For a run that crashed, was killed, or was left with predictions running (a Ctrl-C
    that exited at once): each is canceled on Replicate and journaled as canceled, so a
    re-run skips it (--retry-failed runs it again). A prediction that already finished is
    left for the next run to download.
    """
    journal = _journal_of(target, options["state"], options["output_dir"])
    if not journal.exists():
        click.echo(f"nothing is running: {_not_run_yet(target, journal)}", err=True)
        return EXIT_OK
    console = StderrConsole()
    with ExitStack() as stack:
        setup_logging(stack, console, options, terminal_level=logging.WARNING)
        try:
            config = EngineConfig(
                api=ApiConfig.from_env(os.environ),
                output_dir=journal.parent,
                state_path=journal,
            )
            return cancel_command(config, dry_run=options["dry_run"])
        except (ConfigError, AuthenticationError) as exc:
            raise Stop(str(exc)) from None
        except EngineError as exc:  # the journal cannot be written: nothing was journaled
            raise Stop(f"cannot cancel: {exc}", EXIT_FAILED) from None


@click.command(
    short_help="Print one row per output file: job, prediction, size, sha256.",
    epilog=epilog(
        "replicate-batch export manifests/example.yaml > files.jsonl",
        "replicate-batch export manifests/example.yaml --format csv \\\n--output files.csv",
        "replicate-batch export night.jsonl | head -3",
        codes_of="export",
    ),
)
@manifest_argument
@option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="Row format.",
)
@run_folder
@state
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
    journal = _journal_of(manifest, state, output_dir)
    folder = output_dir or default_output_dir(manifest)
    check_paths(
        reads={"the manifest": manifest, "the journal": journal},
        writes={"--output": output},
        kept=engine_files(folder, journal),
    )
    if output is not None:  # not over a file of the run it lists, nor where one may land
        jobs = partial(read_manifest, manifest, allow_outside_files=True)
        try:
            check_apart_from_outputs(folder, {"--output": output}, jobs)
        except ManifestError as exc:
            raise Stop(str(exc)) from None
    secret = configured_secret()
    try:
        replay = load_journal(journal)
        rows = export_rows(manifest, replay, folder)
        if output is None:
            with reader_may_leave():
                rows_written = write_export(rows, fmt, sys.stdout, secret=secret)
        else:
            with output.open("w", newline="") as out:
                rows_written = write_export(rows, fmt, out, secret=secret)
    except ManifestError as exc:
        raise Stop(str(exc)) from None
    except OSError as exc:
        raise Stop(f"{exc.filename}: {exc.strerror}") from None
    note = "" if journal.exists() else f"; {_not_run_yet(manifest, journal)}"
    click.echo(f"exported {plural(rows_written, 'file')}{note}", err=True)
    return EXIT_OK


@click.command(
    short_help="Write index.html beside the outputs (no network).",
    epilog=epilog(
        "replicate-batch gallery manifests/example.yaml",
        "replicate-batch gallery night.jsonl --output-dir out/",
        codes_of="gallery",
    ),
)
@manifest_argument
@gallery_folder
@state
def gallery(manifest: Path, output_dir: Path | None, state: Path | None) -> int:
    """Write index.html beside the outputs, from the journal and sidecars (no network)."""
    out = output_dir or default_output_dir(manifest)
    journal = _journal_of(manifest, state, output_dir)
    gallery_file = out / ENGINE_FILES.gallery
    check_paths(  # index.html must not be written over the journal, the manifest, ...
        reads={"the manifest": manifest, "the journal": journal},
        writes={"the gallery": gallery_file},
        output_dir=out,
        kept={k: v for k, v in engine_files(out, journal).items() if v != gallery_file},
    )
    if not journal.exists():
        # No folder is made for a page with nothing on it: the run writes index.html.
        why = _not_run_yet(manifest, journal)
        with said_if_read():  # gallery writes to no reader of standard output: never 141
            click.echo(f"gallery: not written, {why}; each run writes it at its end", err=True)
        return EXIT_OK
    try:
        write_gallery(manifest, out, journal, strict=True)
    except ManifestError as exc:
        raise Stop(str(exc)) from None
    return EXIT_OK


def _journal_of(target: Path, state: Path | None, output_dir: Path | None) -> Path:
    """Return the journal the user means; `Stop` (exit 2) when they named one not there.

    A journal named as the argument, by ``--state`` or by ``--output-dir`` that does not
    exist is a mistyped path: said with the path they gave, never a default folder they
    did not. Only a manifest's default folder may hold no journal yet (it never ran):
    each command says so and exits 0.
    """
    if state is None and target.name == ENGINE_FILES.journal:
        if not target.exists():
            raise Stop(f"no journal at {target}")
        return target
    journal = resolve_journal(target, state, output_dir)
    if journal.exists():
        return journal
    if state is not None:
        raise Stop(f"no journal at {state} (--state): no run has written it")
    if output_dir is not None:
        raise Stop(f"no journal in {output_dir} (--output-dir): no run has written there")
    return journal


def _not_run_yet(target: Path, journal: Path) -> str:
    """Say that ``target`` has not run yet; `Stop` (exit 2) when it is no manifest at all.

    One wording for every command that reads a journal there is not yet.
    """
    try:
        for _ in read_manifest(target, allow_outside_files=True):  # its first job is enough
            break
    except ManifestError as exc:
        raise Stop(str(exc)) from None
    return f"nothing has run yet (no journal at {journal.resolve()})"


def write_gallery(
    manifest: Path, output_dir: Path, journal: Path, *, quiet: bool = False, strict: bool = False
) -> None:
    """Write index.html; a gallery that cannot be written never fails the run itself.

    ``strict`` (the ``gallery`` command, whose only work it is): that is an error, exit 2.
    """
    from engine._gallery import write_manifest_gallery  # noqa: PLC0415

    try:
        stats = write_manifest_gallery(manifest, output_dir, journal)
    except OSError as exc:
        problem = f"cannot write the gallery in {output_dir}: {exc.strerror or exc}"
        if strict:
            raise Stop(problem) from None
        click.echo(f"warning: {problem}", err=True)
        return
    if not quiet:
        with said_if_read():  # a line lost with its reader; the page is written
            click.echo(
                f"gallery: {stats.path} ({plural(stats.jobs, 'job')}, "
                f"{plural(stats.files, 'file')})",
                err=True,
            )
