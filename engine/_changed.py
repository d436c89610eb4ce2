"""Notice a job whose model or input changed after the journal recorded it, and act.

A job with an explicit ``id`` keeps its key when its manifest line is edited, so the
journal alone would keep its old outputs (and re-attach its old prediction) as if
nothing had changed. Each ``creating`` record of such a job holds what it asked for,
``job_key(model, input)`` (the ``content`` field); a run compares it with the
manifest's line. Jobs without an explicit id need no check: their key is that digest.

On a change, the `EngineConfig.on_changed` policy decides:

``rerun`` (the default)
    The job runs again from scratch (a new prediction). The old outputs on disk are
    first renamed aside, never replaced silently: ``S.png`` becomes
    ``S.before-<old prediction id>.png``, inside the job's own name space. A prediction
    the old input left running (a killed run) is canceled first, so it bills no more. The
    ``job.changed`` event and the report name the job and the kept files.
``report``
    Nothing is re-run; the job is listed in the report's ``stale_keys`` and the run
    exits 1, since the files on disk do not answer the manifest any more.

Journals written before the ``content`` field existed are not checked.
"""

from __future__ import annotations

import contextlib
import posixpath
from pathlib import Path

from engine._durable import fsync_dir
from engine._journal import JobState
from engine._parts import is_stored
from jobs import Job, job_key

__all__ = ["has_changed", "keep_aside"]


def has_changed(job: Job, state: JobState) -> bool:
    """Tell whether ``job`` asks for something else than its journaled attempt did."""
    return (
        job.explicit_id
        and state.content is not None
        and state.content != job_key(job.model, job.input)
    )


def aside_name(name: str, prediction_id: str | None) -> str:
    """Return where the old output ``name`` is kept: ``S.before-<id>.ext``."""
    folder, base = posixpath.split(name)
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        stem, ext = base, ""
    tag = f"before-{prediction_id or 'earlier'}"
    kept = f"{stem}.{tag}.{ext}" if ext else f"{stem}.{tag}"
    return posixpath.join(folder, kept) if folder else kept


def keep_aside(output_dir: Path, state: JobState) -> list[str]:
    """Rename the journaled outputs of ``state`` aside; return their new names.

    Files no longer on disk (or not the recorded size) are left alone. Runs in a worker
    thread: it renames and fsyncs.
    """
    kept: list[str] = []
    folders: set[Path] = set()
    for file in state.files:
        source = output_dir / file.name
        if not is_stored(source, file.size):
            continue
        name = aside_name(file.name, state.prediction_id)
        target, n = output_dir / name, 1
        while target.exists() or target.is_symlink():
            n += 1
            name = aside_name(file.name, f"{state.prediction_id}-{n}")
            target = output_dir / name
        source.rename(target)
        folders.add(target.parent)
        kept.append(name)
    for folder in folders:
        with contextlib.suppress(OSError):
            fsync_dir(folder)
    return kept
