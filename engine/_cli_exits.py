"""Say which exit codes each command returns, and why: the one table every --help reads.

The codes are `engine._report`'s ``EXIT_*``. A command lists only the codes it can
return: 130 for any Ctrl-C (click turns it into an abort), 141 only for the commands
that write to standard output (`engine._cli_stop.reader_may_leave`). A test compares
each command's --help with this table, and the README's table with `GENERAL`.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine._report import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_CREDIT,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_STORAGE,
    EXIT_USAGE,
)

__all__ = ["EXIT_CODES", "GENERAL", "exit_codes"]

_CTRL_C = "interrupted (Ctrl-C)"
_READER_LEFT = "the reader of standard output went away (... | head): quietly"

# What each code means across the program (the group's --help and the README's table).
GENERAL: Mapping[int, str] = {
    EXIT_OK: "done: every job done, or the command did all it was asked",
    EXIT_FAILED: "some jobs failed or were canceled, or part of the work was not done",
    EXIT_USAGE: "usage, manifest or configuration error (nothing was sent)",
    EXIT_STOPPED: "run: a budget (--max-*) or the --deadline left jobs; run again",
    EXIT_NO_CREDIT: "run: no credit (402): creates stopped; add credit, run again",
    EXIT_STORAGE: "run: the disk refused a write mid-run; make room, run again",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM)",
    EXIT_BROKEN_PIPE: _READER_LEFT,
}

# Each command (by its path under the program) and the codes it can return.
EXIT_CODES: Mapping[str, Mapping[int, str]] = {
    "run": {
        EXIT_OK: "every job done",
        EXIT_FAILED: "some jobs failed, were canceled or are left for the next run",
        EXIT_USAGE: "usage, manifest or configuration error (nothing was sent)",
        EXIT_STOPPED: "a budget (--max-*) or the --deadline left jobs; run again to go on",
        EXIT_NO_CREDIT: "no credit (402): creates stopped, jobs stay pending; add credit",
        EXIT_STORAGE: "the disk refused a write mid-run; make room and run again",
        EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM); run again to resume",
        EXIT_BROKEN_PIPE: "the reader of the summary went away (the run itself finished)",
    },
    "validate": {
        EXIT_OK: "every job's input is valid (nothing was run)",
        EXIT_FAILED: "the API could not answer (network, server); nothing was run",
        EXIT_USAGE: "a problem in the manifest, the inputs or the configuration",
        EXIT_INTERRUPTED: _CTRL_C,
        EXIT_BROKEN_PIPE: _READER_LEFT,
    },
    "status": {
        EXIT_OK: "every job the journal knows is done (the others are pending)",
        EXIT_FAILED: "some jobs need a look (running, failed, canceled, not downloaded)",
        EXIT_USAGE: "no manifest or journal there, or Redis cannot be reached",
        EXIT_INTERRUPTED: _CTRL_C,
        EXIT_BROKEN_PIPE: _READER_LEFT,
    },
    "export": {
        EXIT_OK: "exported (a done job's files only; no row before the first run)",
        EXIT_USAGE: "a manifest problem, no journal where you said, or bad --output",
        EXIT_INTERRUPTED: _CTRL_C,
        EXIT_BROKEN_PIPE: _READER_LEFT,
    },
    "gallery": {
        EXIT_OK: "index.html written (or nothing has run yet, and it says so)",
        EXIT_USAGE: "a manifest problem, no journal where you said, or no index.html",
        EXIT_INTERRUPTED: _CTRL_C,
    },
    "cancel": {
        EXIT_OK: "nothing is left running (all canceled, or none was running)",
        EXIT_FAILED: "some predictions could not be canceled (listed; run it again)",
        EXIT_USAGE: "no manifest or journal there, no token, or a usage error",
        EXIT_INTERRUPTED: _CTRL_C,
        EXIT_BROKEN_PIPE: _READER_LEFT,
    },
    "worker": {
        EXIT_OK: "the run is complete: every job this worker took is done",
        EXIT_FAILED: "some jobs this worker took are not done (failed, canceled, deferred)",
        EXIT_USAGE: "usage or configuration error, or Redis cannot be reached",
        EXIT_INTERRUPTED: "interrupted (Ctrl-C or SIGTERM here, or on the submitting run)",
    },
    "journal export": {
        EXIT_OK: "the journal was written",
        EXIT_USAGE: "usage error, Redis cannot be reached, or the file cannot be written",
        EXIT_INTERRUPTED: _CTRL_C,
    },
}


def exit_codes(command: str | None) -> str:
    """Return the "Exit codes:" block of ``command``'s help (None: the whole program's)."""
    rows = GENERAL if command is None else EXIT_CODES[command]
    heading = (
        "Exit codes (each command's --help lists its own):" if command is None else "Exit codes:"
    )
    return "\b\n" + heading + "\n" + "\n".join(f"  {code:<4} {why}" for code, why in rows.items())
