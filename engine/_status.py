"""Answer questions about a run from its journal alone: ``status`` and ``export``.

No network: what the journal says is what happened. A manifest argument is used only to
find the default journal and to list outputs in manifest order.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from engine._config import default_output_dir, journal_path
from engine._errors import ConfigError
from engine._journal import JobState, Replay, journal_manifest, load_journal
from engine._prediction import web_url
from engine._redact import redact
from engine._sidecar import read_sidecar, sidecar_path
from engine._wording import plural
from jobs import JobStatus, ManifestError, canonical_json, read_manifest

__all__ = [
    "check_default_folder",
    "export_rows",
    "resolve_journal",
    "status_report",
    "write_export",
]

_JOURNAL_SUFFIXES = (".jsonl", ".ndjson")


def resolve_journal(target: Path, state: Path | None, output_dir: Path | None) -> Path:
    """Return the journal for ``target`` (a journal itself, or a manifest).

    A manifest's default folder (neither ``output_dir`` nor ``state`` given) must be its
    own: `check_default_folder` raises `ConfigError` when another manifest's run wrote it.
    """
    if state is None and target.suffix in _JOURNAL_SUFFIXES and _looks_like_journal(target):
        return target
    if output_dir is None and state is None:
        check_default_folder(target)
    return journal_path(output_dir or default_output_dir(target), state)


def check_default_folder(manifest: Path) -> None:
    """Raise `ConfigError` when ``manifest``'s default output folder is another manifest's.

    The default folder is named after the manifest's file name alone (``outputs/night``
    for ``A/night.jsonl`` and ``B/night.jsonl`` alike). Shared, each run would take the
    other's jobs for its own edited ones, pay for them again and overwrite their files.
    The journal's first run header names the manifest it was written for; one written
    for another path is refused, before any API call. An explicit ``--output-dir`` or
    ``--state`` is the user's choice and is not checked here.
    """
    folder = default_output_dir(manifest)
    owner = journal_manifest(journal_path(folder))
    mine = str(manifest.resolve())
    if owner is not None and owner != mine:
        raise ConfigError(
            f"{folder} is the default output folder of {owner}, not of {mine} (same file "
            f"name); pass --output-dir to give this manifest its own"
        )


def _looks_like_journal(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    return b'"e":' in first and b'"k":' in first


def status_report(journal: Path, *, manifest: Path | None = None) -> dict[str, Any]:
    """Return counts by status and the failures, from ``journal`` (no network).

    With ``manifest``, count the jobs of this manifest only (those the journal does not
    know are pending); journaled jobs it no longer has (an edited job without an id
    gets a new key) are counted apart, as ``earlier_manifest_jobs``. A missing journal is
    a manifest that never ran: every job pending. Raise `jobs.ManifestError` when the
    manifest cannot be read and the journal holds nothing to count instead.
    """
    replay = load_journal(journal)
    summary: dict[str, Any] | None = None
    problem = None
    if manifest is not None:
        try:
            summary = _manifest_summary(replay, manifest)
        except (ManifestError, OSError) as exc:
            if not replay.records:  # nothing journaled: the manifest is all there is
                raise
            problem = str(exc)
    if summary is None:
        summary = journal_summary(replay)
    summary["journal"] = str(journal.resolve())
    summary["runs"] = replay.runs
    summary["predictions_created"] = replay.created
    if problem is not None:
        summary["manifest_problem"] = f"counted the journal alone: {problem}"
    return summary


def _shown(state: JobState) -> JobStatus:
    """Return the status a person is shown: a failure about the account or the network
    (no prediction, not permanent: a 402, a create the network refused) is pending, as a
    plain re-run creates it again (`engine._runner`'s rule) and the run counted it."""
    if state.status is JobStatus.FAILED and state.prediction_id is None and not state.permanent:
        return JobStatus.PENDING
    return state.status


def _manifest_summary(replay: Replay, manifest: Path) -> dict[str, Any]:
    states = replay.jobs
    counts: Counter[JobStatus] = Counter()
    failed: dict[str, dict[str, Any]] = {}
    running: dict[str, dict[str, Any]] = {}
    known = 0
    for job in read_manifest(manifest, allow_outside_files=True):  # nothing is sent
        state = states.get(job.key)
        if state is None:
            counts[JobStatus.PENDING] += 1
            continue
        known += 1
        status = _shown(state)
        counts[status] += 1
        if status is JobStatus.FAILED:
            failed[job.key] = _failure(state)
        elif state.status is JobStatus.RUNNING and state.prediction_id is not None:
            running[job.key] = _running(state.prediction_id)
    return {
        "manifest": str(manifest.resolve()),
        "jobs": sum(counts.values()),
        "by_status": {status.value: counts.get(status, 0) for status in JobStatus},
        "failed": failed,
        "running": running,
        "earlier_manifest_jobs": len(states) - known,
        "records": replay.records,
        "torn_lines": replay.torn_lines,
        "corrupt_lines": replay.corrupt_lines,
    }


def _failure(state: JobState) -> dict[str, Any]:
    return {
        "error": state.error,
        "error_class": state.error_class,
        "permanent": state.permanent,
        "attempts": state.attempts,
        "prediction_id": state.prediction_id,
        "url": web_url(state.prediction_id) if state.prediction_id else None,
    }


def _running(prediction_id: str) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "url": web_url(prediction_id)}


def print_status(report: dict[str, Any], out: IO[str] = sys.stdout, *, secret: str = "") -> None:
    """Print ``report`` for a person, every line through the one redaction."""

    def say(text: str, *, file: IO[str]) -> None:
        file.write(redact(text, secret=secret) + "\n")

    if report["records"]:
        records, runs = plural(report["records"], "record"), plural(report["runs"], "run")
        say(f"journal: {report['journal']} ({records}, {runs})", file=out)
    else:
        say(f"journal: none yet at {report['journal']} (nothing has run)", file=out)
    if "manifest" in report:
        say(f"manifest: {report['manifest']} ({plural(report['jobs'], 'job')})", file=out)
    for status, count in report["by_status"].items():
        if count:
            say(f"  {status:>10}: {count}", file=out)
    earlier = report.get("earlier_manifest_jobs")
    if earlier:
        say(f"  {earlier} from earlier versions of the manifest (not counted above)", file=out)
    if "manifest_problem" in report:
        say(f"  note: {report['manifest_problem']}", file=out)
    if report["torn_lines"] or report["corrupt_lines"]:
        say(
            f"  skipped lines: {report['torn_lines']} torn, {report['corrupt_lines']} corrupt",
            file=out,
        )
    running = report["running"]
    if running:
        say(f"running predictions ({len(running)}; 'cancel' stops them):", file=out)
        for key, info in list(running.items())[:50]:
            say(f"  {key}: {info['url']}", file=out)
        if len(running) > 50:
            say(f"  ... and {len(running) - 50} more", file=out)
    unanswered = report["by_status"].get(str(JobStatus.CREATING), 0)
    if unanswered:
        creates = plural(unanswered, "create")
        say(
            f"may be running: {creates} sent without an answer "
            "('cancel' looks for them in the prediction list)",
            file=out,
        )
    failed = report["failed"]
    if failed:
        say(f"failed jobs ({len(failed)}):", file=out)
        for key, info in list(failed.items())[:50]:
            kind = "permanent" if info["permanent"] else "transient"
            tried = plural(info["attempts"], "attempt")
            say(f"  {key}: [{kind}, {tried}] {info['error']}", file=out)
            if info.get("url"):
                say(f"      {info['url']}", file=out)
        if len(failed) > 50:
            say(f"  ... and {len(failed) - 50} more", file=out)


def export_rows(
    manifest: Path, replay: Replay, output_dir: Path | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one row per output file, in manifest order, joining jobs and the journal.

    With ``output_dir``, ``version`` is the one that actually ran, from the job's sidecar.
    ``input`` is the object; `write_export` writes it as canonical JSON text in CSV.
    """
    for job in read_manifest(manifest, allow_outside_files=True):  # nothing is sent
        state = replay.jobs.get(job.key)
        if state is None or state.status is not JobStatus.DONE:
            continue
        version = job.model.version
        if output_dir is not None:
            sidecar = read_sidecar(sidecar_path(output_dir, job))
            version = (sidecar or {}).get("version") or version
        for file in state.files:
            yield {
                "file": file.name,
                "job": job.key,
                "prediction_id": state.prediction_id,
                "model": str(job.model),
                "version": version,
                "input": job.input,
                "size": file.size,
                "sha256": file.sha256,
                "predict_time": state.predict_time,
            }


def write_export(
    rows: Iterator[dict[str, Any]], fmt: str, out: IO[str], *, secret: str = ""
) -> int:
    """Write rows as ``jsonl`` or ``csv``, redacted; return how many were written."""
    count = 0
    if fmt == "csv":
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            writer.writerow({k: _cell(v, secret) for k, v in row.items()})
            count += 1
        return count
    for row in rows:
        # JSON text escapes line breaks and quotes: a mask cannot break a line's syntax.
        out.write(redact(json.dumps(row, ensure_ascii=False), secret=secret) + "\n")
        count += 1
    return count


def _cell(value: Any, secret: str) -> Any:
    text = canonical_json(value) if isinstance(value, dict) else value
    return redact(text, secret=secret) if isinstance(text, str) else text


def journal_summary(result: Replay) -> dict[str, Any]:
    """Count jobs by status and list failed keys with their errors (for ``status``)."""
    counts = Counter(_shown(state) for state in result.jobs.values())
    return {
        "jobs": len(result.jobs),
        "by_status": {status.value: counts.get(status, 0) for status in JobStatus},
        "failed": {
            key: _failure(state)
            for key, state in result.jobs.items()
            if _shown(state) is JobStatus.FAILED
        },
        "running": {
            key: _running(state.prediction_id)
            for key, state in result.jobs.items()
            if state.status is JobStatus.RUNNING and state.prediction_id is not None
        },
        "records": result.records,
        "torn_lines": result.torn_lines,
        "corrupt_lines": result.corrupt_lines,
    }
