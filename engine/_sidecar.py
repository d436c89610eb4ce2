"""Write what made each job's outputs beside them: ``{stem}.info.json``, one per job.

A sidecar says, in our words, what ``yt-dlp --write-info-json`` says of a video: the model
and the version that actually ran (the prediction's, not only the manifest's), the input as
sent, the prediction's id, web link, times and metrics as Replicate reported them, the
model's logs when it failed, and each file's name, size, sha256 and source URL.

It is written durably (temp file, fsync, rename, fsync the folder) after the files and
before ``done`` is journaled, so a run killed in between writes it again on resume. The
gallery reads sidecars, never the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio

from engine._durable import write_durably
from engine._errors import StorageError
from engine._prediction import Prediction
from jobs import Job, OutputFile

__all__ = [
    "SIDECAR_FORMAT",
    "SIDECAR_SUFFIX",
    "read_sidecar",
    "sidecar_path",
    "sidecar_record",
    "store_sidecar",
    "web_url",
    "write_durably",
    "write_json_durably",
    "write_sidecar",
]

SIDECAR_SUFFIX = ".info.json"  # reserved for sidecars by jobs.outputs' naming rules
SIDECAR_FORMAT = 1
MAX_LOG_CHARS = 64 * 1024  # the tail of a failed model's logs: where the traceback is
_WEB = "https://replicate.com/p/"


def sidecar_path(output_dir: Path, job: Job) -> Path:
    """Return where ``job``'s sidecar lives: ``{output_dir}/{job.output}.info.json``."""
    return output_dir / f"{job.output}{SIDECAR_SUFFIX}"


def web_url(prediction_id: str) -> str:
    """Return the prediction's page on replicate.com."""
    return f"{_WEB}{prediction_id}"


def sidecar_record(
    job: Job, prediction: Prediction, files: Iterable[OutputFile] = ()
) -> dict[str, Any]:
    """Return the sidecar of ``job`` whose last prediction is ``prediction``.

    ``input`` is what the server says it ran (it echoes the input as sent), else the job's
    own. ``logs`` are kept only when the prediction failed: the tail holds the traceback.
    Inline outputs (text, JSON, data: URIs) have no ``url``.
    """
    failed = prediction.status.value == "failed"
    logs = prediction.logs if failed and prediction.logs else None
    return {
        "format": SIDECAR_FORMAT,
        "job": job.key,
        "requested": str(job.model),
        "model": prediction.model or job.model.slug,
        "version": prediction.version or job.model.version,
        "input": dict(prediction.input) if prediction.input is not None else job.input,
        "prediction_id": prediction.id,
        "web_url": prediction.urls.get("web") or web_url(prediction.id),
        "status": prediction.status.value,
        "created_at": prediction.created_at,
        "started_at": prediction.started_at,
        "completed_at": prediction.completed_at,
        "metrics": dict(prediction.metrics) if prediction.metrics is not None else None,
        "error": prediction.error,
        "logs": logs[-MAX_LOG_CHARS:] if logs else None,
        "files": [_file(f) for f in files],
    }


def _file(f: OutputFile) -> dict[str, Any]:
    url = f.url if f.url and not f.url.startswith("data:") else None
    return {"name": f.name, "size": f.size, "sha256": f.sha256, "url": url}


async def store_sidecar(
    output_dir: Path, job: Job, prediction: Prediction, files: Iterable[OutputFile] = ()
) -> Path:
    """Write ``job``'s sidecar durably in a worker thread; return its path.

    Raise `StorageError` when the disk refuses, as a download would.
    """
    path = sidecar_path(output_dir, job)
    record = sidecar_record(job, prediction, files)
    try:
        await anyio.to_thread.run_sync(write_sidecar, path, record)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno is not None else str(exc)
        raise StorageError(f"cannot write {path}: {reason}") from exc
    return path


def write_sidecar(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``path`` durably (blocking: call it from a worker thread)."""
    write_json_durably(path, record)


def write_json_durably(path: Path, value: object) -> None:
    """Write ``value`` as indented JSON, durably (see `write_durably`)."""
    data = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False).encode() + b"\n"
    write_durably(path, data)


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """Return the sidecar at ``path``; None when it is missing or not a sidecar."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and "prediction_id" in value else None
