"""The command line: the only place that reads flags and the environment.

Exit codes (`RunSummary.exit_code` decides a run's): 0 every job done, 1 some jobs
failed or were canceled, 2 usage, manifest or configuration error, 3 a budget or the
deadline left jobs, 4 no credit (402), 5 the disk refused a write mid-run, 130
interrupted, 141 the reader of standard output went away (``export | head``);
`engine._cli_exits` says which codes each command returns.

This module is the console script's entry (`main`) and the click group; the commands live
in modules named for their job: `_cli_batch` (run, validate), `_cli_inspect` (status,
export, gallery, cancel), `_cli_redis` (worker, journal export); their shared options are
declared once in `_cli_options`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from engine._cli_batch import run, validate
from engine._cli_exits import exit_codes
from engine._cli_inspect import cancel, export, gallery, status
from engine._cli_options import epilog
from engine._cli_redis import journal, worker
from engine._cli_stop import Stop, error_line, reader_may_leave
from engine._errors import ConfigError
from engine._report import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = ["main"]

COMPLETE_VAR = "_REPLICATE_BATCH_COMPLETE"
# click 8.2+ raises this for a group called without its command; 8.1 shows the help itself.
_NO_ARGS_IS_HELP: type[Exception] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, standalone_mode=False, complete_var=COMPLETE_VAR)
    except click.exceptions.Exit as exc:  # --help, --version, completion
        return exc.exit_code
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and (not args or isinstance(exc, _NO_ARGS_IS_HELP)):
            # No command at all (or a group without one, as 'journal'): show what there is.
            click.echo(ctx.get_help(), err=True)
            return EXIT_USAGE
        # One line, no usage dump: what is wrong and where the help is.
        where = ctx.command_path if ctx is not None else "replicate-batch"
        click.echo(error_line(f"{exc.format_message()} (see '{where} --help')"), err=True)
        return EXIT_USAGE
    except click.Abort:
        return EXIT_INTERRUPTED
    except Stop as stop:
        if stop.message:
            click.echo(error_line(stop.message), err=True)
        return stop.code
    except ConfigError as exc:  # base URL, token, paths: one line, before anything is paid
        click.echo(error_line(str(exc)), err=True)
        return EXIT_USAGE
    return result if isinstance(result, int) else EXIT_OK


class _Program(click.Group):
    """The program's group: when the reader of standard output goes away, any command (and
    any --help) ends quietly with 141, where click alone would exit 1."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with reader_may_leave():  # the group's own --help and --version
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with reader_may_leave():  # every command, its --help included
            return super().invoke(ctx)


@click.group(
    cls=_Program,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=epilog(
        "replicate-batch run manifests/example.yaml --emulator",
        "replicate-batch status manifests/example.yaml",
        "replicate-batch export manifests/example.yaml --format csv > outputs.csv",
    )
    + "\n\n"
    + exit_codes(None)
    + """

\b
Settings: a flag beats its variable REPLICATE_BATCH_<FLAG>
(REPLICATE_BATCH_CONCURRENCY=8), which beats the --config file (or
REPLICATE_BATCH_CONFIG), which beats the default.
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


@cli.command(
    short_help="Serve the local Replicate API emulator (its own --help).",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("emulator_args", nargs=-1, type=click.UNPROCESSED)
def emulator(emulator_args: tuple[str, ...]) -> int:
    """Serve the local Replicate API emulator (its own flags: see 'emulator --help')."""
    from engine.emulator.cli import serve_forever  # noqa: PLC0415 - heavy, only here

    code: int = serve_forever(list(emulator_args))
    return code


for _command in (run, validate, status, export, gallery, cancel, worker, journal):
    cli.add_command(_command)
