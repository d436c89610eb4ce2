"""Normalise a prediction's raw output once, and name the files it becomes.

Replicate returns a URL, a list of URLs, a list of string tokens (language models), or
any JSON value. `normalise_output` turns each shape into a list of `OutputItem` so the
rest of the engine handles one shape; `plan_output_names` says where each item lands,
relative to the output folder. Both are pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import mimetypes
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from jobs.model import Job

__all__ = [
    "OutputItem",
    "OutputKind",
    "UnsafeOutputNameError",
    "check_output_stem",
    "normalise_output",
    "plan_output_names",
]

_HTTP_RE = re.compile(r"^https?://\S+$", re.IGNORECASE)
# A media type is optional in a data URI ("data:,hello"); requiring the comma keeps a
# language model's answer that starts with "data: ..." a text, not a file.
_DATA_RE = re.compile(
    r"^data:(?P<type>[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)?(?:;[^,\s]*)*,",
    re.IGNORECASE,
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_EXT_RE = re.compile(r"^\.[a-z0-9]{1,10}$")
_FALLBACK_EXT = ".bin"

# Fixed answers for common types: mimetypes reads /etc/mime.types, so its answers vary by
# machine, and a name must not change between the run that started a job and the resume.
_EXTENSIONS = {
    "application/json": ".json",
    "application/octet-stream": ".bin",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "audio/aac": ".aac",
    "audio/flac": ".flac",
    "audio/mp4": ".m4a",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "image/avif": ".avif",
    "image/bmp": ".bmp",
    "image/gif": ".gif",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/svg+xml": ".svg",
    "image/tiff": ".tiff",
    "image/webp": ".webp",
    "model/gltf-binary": ".glb",
    "text/csv": ".csv",
    "text/html": ".html",
    "text/markdown": ".md",
    "text/plain": ".txt",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
}


class OutputKind(StrEnum):
    """Say whether an output item is a file to download or content to write."""

    FILE = "file"  # ``url`` is an http(s) URL or a data: URI
    TEXT = "text"  # ``text`` is plain text (e.g. joined language-model tokens)
    JSON = "json"  # ``text`` is canonical, indented JSON


@dataclass(frozen=True, slots=True)
class OutputItem:
    """One piece of a prediction's output: a file reference or inline content."""

    kind: OutputKind
    url: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        # Exactly one of url/text, matching the kind: consumers branch on kind only.
        if (self.kind is OutputKind.FILE) != (self.url is not None) or (self.url is None) == (
            self.text is None
        ):
            raise ValueError(f"an OutputItem of kind {self.kind} needs exactly its field")

    @classmethod
    def file(cls, url: str) -> OutputItem:
        """Make a file reference."""
        return cls(OutputKind.FILE, url=url)

    @classmethod
    def inline(cls, kind: OutputKind, text: str) -> OutputItem:
        """Make inline text or JSON content."""
        return cls(kind, text=text)


class UnsafeOutputNameError(ValueError):
    """Raise when an output stem would write outside the output folder."""


def is_file_url(value: str) -> bool:
    """Tell whether ``value`` is an http(s) URL or a data: URI."""
    return bool(_HTTP_RE.match(value) or _DATA_RE.match(value))


def normalise_output(raw: object) -> list[OutputItem]:
    """Turn a prediction's raw JSON output into output items, in order.

    None gives nothing; a URL or a (nested) list of URLs gives files; a string or a list
    of strings (streamed tokens) gives one text; anything else one JSON document.
    """
    if raw is None:
        return []
    if isinstance(raw, str):
        if is_file_url(raw):
            return [OutputItem.file(raw)]
        return [OutputItem.inline(OutputKind.TEXT, raw)]
    if isinstance(raw, list | tuple):
        flat = list(_flatten(raw))
        if flat and all(isinstance(v, str) and is_file_url(v) for v in flat):
            return [OutputItem.file(str(v)) for v in flat]
        if not raw:
            return []
        if all(isinstance(v, str) for v in raw):
            # Tokens may themselves look like URLs; a flat list of strings that are not
            # all URLs is one answer, as Replicate's "concatenate" display shows it.
            return [OutputItem.inline(OutputKind.TEXT, "".join(str(v) for v in raw))]
    text = json.dumps(raw, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    return [OutputItem.inline(OutputKind.JSON, text)]


def plan_output_names(
    job: Job,
    items: Sequence[OutputItem],
    content_types: Sequence[str | None] | None = None,
) -> list[str]:
    """Name each item's file, relative to the output folder, from ``job.output``.

    One item is ``{stem}.{ext}``, several are ``{stem}_{n}.{ext}`` counting from 0. The
    extension comes from the URL's path, else a data URI's media type, else the matching
    ``content_types`` entry, else ``.bin``; text is ``.txt``, JSON ``.json``. Raise
    `UnsafeOutputNameError` if the stem would leave the output folder.
    """
    if content_types is not None and len(content_types) != len(items):
        raise ValueError("content_types must have one entry per item")
    problem = check_output_stem(job.output)
    if problem is not None:
        raise UnsafeOutputNameError(f"output {job.output!r}: {problem}")
    hints: Sequence[str | None] = content_types or [None] * len(items)
    exts = [_extension(item, hint) for item, hint in zip(items, hints, strict=True)]
    if len(items) == 1:
        return [f"{job.output}{exts[0]}"]
    return [f"{job.output}_{n}{ext}" for n, ext in enumerate(exts)]


def check_output_stem(stem: str) -> str | None:
    """Return why ``stem`` is not a safe relative file stem, or None if it is.

    Safe means: relative, ``/``-separated, no empty, ``.`` or ``..`` segment, no
    backslash (a separator on Windows) and no control character.
    """
    if not stem:
        return "is empty"
    if stem.startswith("/") or re.match(r"^[A-Za-z]:", stem):
        return "is an absolute path; it must be relative to the output folder"
    if "\\" in stem:
        return "contains a backslash; use '/' to make folders"
    if _CONTROL_RE.search(stem):
        return "contains a control character"
    for segment in stem.split("/"):
        if segment in ("", ".", ".."):
            shown = segment or "an empty segment"
            return f"has {shown!r} as a path segment; it must stay inside the output folder"
        if len(segment.encode()) > 200:
            # Leaves room for "_{n}.{ext}" and ".part" under the usual 255-byte limit.
            return "has a path segment longer than 200 bytes"
    return None


def _flatten(values: Sequence[object]) -> list[object]:
    out: list[object] = []
    for value in values:
        if isinstance(value, list | tuple):
            out.extend(_flatten(value))
        else:
            out.append(value)
    return out


def _extension(item: OutputItem, content_type: str | None) -> str:
    if item.kind is OutputKind.TEXT:
        return ".txt"
    if item.kind is OutputKind.JSON:
        return ".json"
    url = item.url or ""
    data = _DATA_RE.match(url)
    if data is not None:
        return _extension_for_type(data["type"] or "text/plain")
    suffix = posixpath.splitext(urlsplit(url).path)[1].lower()
    if _EXT_RE.match(suffix):
        return suffix
    return _extension_for_type(content_type) if content_type else _FALLBACK_EXT


def _extension_for_type(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    ext = _EXTENSIONS.get(media) or mimetypes.guess_extension(media, strict=False) or ""
    return ext if _EXT_RE.match(ext) else _FALLBACK_EXT
