"""Say what still runs on Replicate, and cancel it: the ``cancel`` command's body.

Both read the journal alone to know what runs; only `cancel_command` (without
``--dry-run``) talks to the API.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import anyio
import click

from engine._cancel import CANCEL_WHY, Running, cancel_running, still_running, uncertain_creates
from engine._config import EngineConfig
from engine._journal import load_journal
from engine._report import EXIT_FAILED, EXIT_OK
from engine._wording import plural

__all__ = ["cancel_command", "cancel_hint", "name_left_running"]

_SHOWN = 20  # predictions listed one per line; the rest are counted


def cancel_hint(prog: str, manifest: Path, output_dir: Path | None, state: Path | None) -> str:
    """Return the exact command that cancels what a run left running."""
    words = [*shlex.split(prog), "cancel", str(manifest)]
    if output_dir is not None:
        words += ["--output-dir", str(output_dir)]
    if state is not None:
        words += ["--state", str(state)]
    return shlex.join(words)


def _list(running: list[Running], *, err: bool = True, limit: int | None = _SHOWN) -> None:
    for item in running[:limit]:
        click.echo(f"  {item.key}  {item.url}", err=err)
    if limit is not None and len(running) > limit:
        click.echo(f"  ... and {len(running) - limit} more", err=err)


def name_left_running(journal: Path, hint: str) -> int:
    """Print what the journal shows may still run on Replicate, with the command that stops it.

    The predictions journaled as running, and the creates sent without an answer (their
    prediction may exist, running and billing, with no id journaled: ``cancel`` finds
    them by listing). Return how many there are in all (0 prints nothing).
    """
    replay = load_journal(journal)
    running = still_running(replay)
    uncertain = uncertain_creates(replay)
    if not running and not uncertain:
        return 0
    if running:
        verb = "is" if len(running) == 1 else "are"
        click.echo(
            f"{plural(len(running), 'prediction')} {verb} still running on Replicate "
            "(and billing):",
            err=True,
        )
        _list(running)
    if uncertain:
        click.echo(f"may be running: {_unanswered(uncertain)}", err=True)
    click.echo(f"stop them with: {hint}", err=True)
    click.echo("(or run the same command again to wait for them and download)", err=True)
    return len(running) + uncertain


def _unanswered(count: int) -> str:
    """Say ``count`` creates sent without an answer, one wording everywhere."""
    return f"{plural(count, 'create')} sent without an answer"


def cancel_command(config: EngineConfig, *, dry_run: bool) -> int:
    """List (``dry_run``) or cancel the predictions the journal shows as running.

    Without ``dry_run``, the creates sent without an answer are first looked for in the
    prediction list (up to `EngineConfig.settle` seconds after each was sent), and the
    predictions found are canceled with the rest.
    """
    journal = config.journal_path
    replay = load_journal(journal)
    running = still_running(replay)
    uncertain = uncertain_creates(replay)
    if not running and not uncertain:
        click.echo(f"nothing is running according to {journal}", err=True)
        return EXIT_OK
    if dry_run:
        if running:
            click.echo(
                f"would cancel {plural(len(running), 'prediction')} still running:", err=True
            )
            _list(running, err=False, limit=None)  # all of them, on stdout: a script may read it
        if uncertain:
            click.echo(
                f"may be running: {_unanswered(uncertain)}; without --dry-run they are "
                "looked for in the prediction list and canceled",
                err=True,
            )
        click.echo("nothing was sent (--dry-run)", err=True)
        return EXIT_OK
    config.api.require_token(how=None)
    if uncertain:
        click.echo(
            f"looking for {_unanswered(uncertain)} in the prediction list "
            f"(up to {config.settle:g} s after each was sent)",
            err=True,
        )
    outcome = anyio.run(cancel_running, config, running, replay)
    for item in outcome.found:
        click.echo(f"found     {item.key}  {item.url} (by listing: its create was not answered)")
    if outcome.not_stored:
        click.echo(
            f"{_unanswered(outcome.not_stored)} not in the prediction list: never stored, "
            "nothing bills (the next run creates them)",
            err=True,
        )
    for item in outcome.canceled:
        click.echo(f"canceled  {item.key}  {item.url}")
    for item, status in outcome.finished:
        click.echo(f"{status:<9} {item.key}  {item.url} (too late: the next run downloads it)")
    for item, error in outcome.failed:
        click.echo(f"error     {item.key}  {item.url}: {error}", err=True)
    total = len(running) + len(outcome.found)
    click.echo(
        f"canceled {len(outcome.canceled)} of {total}; journaled as '{CANCEL_WHY}' "
        "(a re-run skips them; --retry-failed runs them again)",
        err=True,
    )
    return EXIT_FAILED if outcome.failed else EXIT_OK
