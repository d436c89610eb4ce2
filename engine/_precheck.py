"""Check a manifest before any API call, once per version of the file.

A manifest error must stop a run before it spends anything, so the CLI reads the whole
manifest first. For a million-line manifest that read costs many seconds on every
resume, although the file has not changed since the last run checked it. The check
therefore leaves a stamp beside the journal (the manifest's path, size and mtime) and
a later run with the same file skips the read. Manifests with ``@file`` inputs are
always read again: the files they name may have changed.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path, PurePath

from engine._durable import write_durably
from engine._redact import looks_secret, redact
from engine._wording import plural
from jobs import ENGINE_FILES, Job, ManifestError, read_manifest

__all__ = ["check_journalable", "check_only_ids", "checked_job_count"]

_STAMP = ENGINE_FILES.stamp


def checked_job_count(
    manifest: Path,
    stamp_dir: Path,
    *,
    allow_outside_files: bool = False,
    local_file: Callable[[Job, Path], None] | None = None,
) -> int:
    """Return the number of jobs in ``manifest``, reading it only when it changed.

    ``local_file`` is shown every ``@file`` input of every job (a manifest with any is
    always read): the run's check that none lies where it writes.
    Raise `jobs.ManifestError` (or OSError) when the manifest cannot be run.
    """
    try:
        stat = manifest.stat()
    except OSError:  # the reader says why, in the words of every other manifest error
        stat = None
    if stat is None:
        return sum(1 for _ in read_manifest(manifest, allow_outside_files=allow_outside_files))
    identity = {
        "path": str(manifest.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    stamp = stamp_dir / _STAMP
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("manifest") == identity:
        return int(saved["jobs"])
    count, local_files = 0, False
    for job in read_manifest(manifest, allow_outside_files=allow_outside_files):
        count += 1
        check_journalable(job)
        for path in local_paths(job.input):
            local_files = True
            if local_file is not None:
                local_file(job, path)
    if not local_files:
        # Only a shortcut for the next run: a folder that refuses it is the run's to report.
        with contextlib.suppress(OSError):
            write_durably(stamp, json.dumps({"manifest": identity, "jobs": count}).encode())
    return count


def local_paths(value: object) -> Iterator[Path]:
    """Yield every ``@file`` input (an absolute `Path`) inside a job's input, at any depth."""
    if isinstance(value, PurePath):
        yield Path(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from local_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from local_paths(item)


def check_journalable(job: Job) -> None:
    """Refuse an id or output name the journal would refuse to store: it looks like a token."""
    for field, value in (("id", job.key), ("output", job.output)):
        if looks_secret(value):
            raise ManifestError(
                f"{redact(value)} looks like an API token; the journal, logs and file names "
                "never hold one, so name the job otherwise",
                path=job.source,
                line=job.line,
                field=field,
            )


def check_only_ids(
    manifest: Path, only: Collection[str], *, allow_outside_files: bool = False
) -> None:
    """Raise `jobs.ManifestError` naming the ``--only`` ids that no job of ``manifest`` has.

    Each unknown id gets the closest job id when there is one ("did you mean"): a typo
    must not become a run of 0 jobs that exits 0.
    """
    missing = set(only)
    if not missing:
        return
    keys: list[str] = []
    jobs = read_manifest(
        manifest, trust_earlier_check=True, allow_outside_files=allow_outside_files
    )
    for job in jobs:
        missing.discard(job.key)
        keys.append(job.key)
        if not missing:
            return
    parts = []
    by_case = {key.casefold(): key for key in keys}  # ids differ in case more than in letters
    for key in sorted(missing):
        same = by_case.get(key.casefold())
        close = [same] if same is not None else difflib.get_close_matches(key, keys, n=1)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    raise ManifestError(
        f"--only names {plural(len(missing), 'id')} that no job has: {', '.join(parts)}",
        path=str(manifest),
    )
