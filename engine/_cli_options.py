"""Declare the command line's shared options once; every command that takes one reuses it.

Also the epilog the commands share (examples, then their exit codes), and the one logging
setup the logging options feed. No command lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from engine._cli_exits import exit_codes
from engine._console import configure_cli_logging
from engine._settings import option

__all__ = [
    "allow_outside_files",
    "embed_metadata",
    "emulator_flag",
    "epilog",
    "json_logs",
    "logging_options",
    "manifest_argument",
    "no_sidecars",
    "output_dir",
    "prices",
    "quiet_verbose",
    "setup_logging",
    "state",
]

F = Callable[..., Any]


def epilog(*examples: str, codes_of: str | None = None) -> str:
    """Return a command's epilog: its examples, then the exit codes of ``codes_of``.

    ``codes_of`` is the command's path in `engine._cli_exits.EXIT_CODES` (None: no codes,
    for a group whose commands list theirs). A newline in an example continues it on an
    indented line (the example ends the line before with a backslash), so no line of the
    help is longer than 80 columns.
    """
    lines = ["\b", "Examples:"]
    for example in examples:
        first, *rest = example.split("\n")
        lines += [f"  {first}", *(f"      {more}" for more in rest)]
    text = "\n".join(lines)
    return text if codes_of is None else f"{text}\n\n{exit_codes(codes_of)}"


manifest_argument = click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))


def _output_dir(help_text: str) -> Callable[[F], F]:
    return option(
        "--output-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        show_default="outputs/<manifest name>",
        help=help_text,
    )


output_dir = _output_dir("Where outputs, journal.jsonl and report.json go.")
# status, export, cancel and validate only read the run's folder (its journal).
run_folder = _output_dir("The run's output folder, whose journal.jsonl is read.")
gallery_folder = _output_dir("The run's output folder: its journal is read, index.html written.")
state = option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    show_default="<output dir>/journal.jsonl",
    help="The journal (the resumable state file).",
)
emulator_flag = option(
    "--emulator",
    is_flag=True,
    show_default="off",
    help="Start the built-in emulator and run against it (no token, no network).",
)
allow_outside_files = option(
    "--allow-outside-files",
    is_flag=True,
    show_default="off",
    help="Let @file inputs name files outside the manifest's folder (a manifest you trust).",
)
embed_metadata = option(
    "--embed-metadata",
    is_flag=True,
    show_default="off",
    help="Write the prompt and parameters into PNG (JPEG/WebP with the images extra) outputs.",
)
no_sidecars = option(
    "--no-sidecars",
    "no_sidecars",
    is_flag=True,
    show_default="sidecars on",
    help="Do not write {stem}.info.json (provenance) beside each job's outputs.",
)


def prices(help: str) -> Callable[[F], F]:
    """Return ``--prices FILE``; ``help`` says what the command does with the table."""
    return option(
        "--prices",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        show_default="none",
        metavar="FILE",
        help=help,
    )


def quiet_verbose(quiet: str, verbose: str) -> Callable[[F], F]:
    """Return ``-q/--quiet`` and ``-v/--verbose`` with the command's own help texts."""

    def decorate(func: F) -> F:
        func = option("-v", "--verbose", is_flag=True, show_default="off", help=verbose)(func)
        return option("-q", "--quiet", is_flag=True, show_default="off", help=quiet)(func)

    return decorate


def json_logs(shown_default: str, help: str) -> Callable[[F], F]:
    """Return ``--json-logs PATH``."""
    return option(
        "--json-logs",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        show_default=shown_default,
        metavar="PATH",
        help=help,
    )


def logging_options(func: F) -> F:
    """Add -q, -v, --log-file and --json-logs (what `setup_logging` reads)."""
    options = [
        quiet_verbose("Print only errors and the summary.", "Print debug events too."),
        option(
            "--log-file",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            show_default="none",
            metavar="PATH",
            help="Append every event to PATH as readable text.",
        ),
        json_logs("none", "Append every event to PATH as JSON lines."),
    ]
    for add in reversed(options):
        func = add(func)
    return func


def setup_logging(
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
