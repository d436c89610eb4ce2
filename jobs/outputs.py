"""Normalise a prediction's raw output once, and name the files it becomes.

Replicate returns a URL, a list of URLs, a list of string tokens (language models), or
any JSON value, which may hold file URLs anywhere inside (``{"image": url, "masks":
[url, url]}``). `normalise_output` turns each shape into a list of `OutputItem` so the
rest of the engine handles one shape; `plan_outputs` says where each item lands,
relative to the output folder, and rewrites a structured document's URLs into those
local names. All pure: no I/O, no clock.

Names, for a job whose output stem is ``S`` (the rules of `jobs.names` keep every one
of them inside ``S``'s namespace, so no two jobs can ever plan the same file):

========================================  ===================================
output                                    files
========================================  ===================================
one URL                                   ``S.png``
a list of URLs (nested lists flattened)   ``S_0.png``, ``S_1.png``
text, or a list of string tokens          ``S.txt`` (ending with a newline)
JSON without file URLs                    ``S.json``
JSON holding file URLs                    ``S.image.png``, ``S.masks_0.png``,
                                          ``S.a.b_1.png``, ``S_0.image.png``
                                          (a top-level list), and ``S.json``
                                          with each URL replaced by its file
========================================  ===================================

Inside JSON, a file is a string that the replicate client (1.0.7's
``transform_output``) would wrap as a ``FileOutput``, that is one starting with
``https:`` or ``data:``, and that can be fetched: an ``https://`` URL without blanks or
a ``data:`` URI with its comma (``"data: see below"`` stays text). Object keys become
slugs of ``A-Z a-z 0-9 _ -`` (others become ``-``, at most 32 characters, ``key`` when
nothing is left); names that then meet inside one job (``{"a_0": u, "a": [u]}``, or
``Image`` beside ``image``) and names ending in ``.info.json`` (the sidecar's) get
``-2``, ``-3``, ... on their last segment, in document order (sorted keys).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from jobs.names import ENGINE_FILES, fold, portability_problem

if TYPE_CHECKING:
    from jobs.model import Job

__all__ = [
    "KeyPath",
    "OutputItem",
    "OutputKind",
    "PlannedOutput",
    "UnsafeOutputNameError",
    "check_output_stem",
    "is_file_url",
    "normalise_output",
    "plan_output_names",
    "plan_outputs",
]

_HTTP_RE = re.compile(r"https?://\S+", re.IGNORECASE)
# A media type is optional in a data URI ("data:,hello"); requiring the comma keeps a
# language model's answer that starts with "data: ..." a text, not a file.
_DATA_RE = re.compile(
    r"data:(?P<type>[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+)?(?:;[^,\s]*)*,",
    re.IGNORECASE,
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_EXT_RE = re.compile(r"\.[a-z0-9]{1,10}")
_SLUG_RE = re.compile(r"[^A-Za-z0-9_-]+")
_SLUG_MAX = 32
_FALLBACK_EXT = ".bin"
# A file name's bytes: 255 on common file systems, less ".part" while downloading.
_NAME_MAX = 255 - len(".part")

KeyPath = tuple[str | int, ...]

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
    """One piece of a prediction's output: a file reference or inline content.

    ``key_path`` says where a file sits in a structured output (``("masks", 0)`` for
    ``output["masks"][0]``; ``(2,)`` for the third URL of a plain list); it is empty
    for a lone URL, text and JSON documents.
    """

    kind: OutputKind
    url: str | None = None
    text: str | None = None
    key_path: KeyPath = ()

    def __post_init__(self) -> None:
        # Exactly one of url/text, matching the kind: consumers branch on kind only.
        if (self.kind is OutputKind.FILE) != (self.url is not None) or (self.url is None) == (
            self.text is None
        ):
            raise ValueError(f"an OutputItem of kind {self.kind} needs exactly its field")

    @classmethod
    def file(cls, url: str, key_path: KeyPath = ()) -> OutputItem:
        """Make a file reference, found at ``key_path`` in the output."""
        return cls(OutputKind.FILE, url=url, key_path=key_path)

    @classmethod
    def inline(cls, kind: OutputKind, text: str) -> OutputItem:
        """Make inline text or JSON content."""
        return cls(kind, text=text)


@dataclass(frozen=True, slots=True)
class PlannedOutput:
    """One item and the file it is written to, relative to the output folder."""

    name: str
    item: OutputItem


class UnsafeOutputNameError(ValueError):
    """Raise when an output stem would write outside the output folder or is not portable."""


def is_file_url(value: str) -> bool:
    """Tell whether ``value`` is an http(s) URL or a data: URI."""
    return bool(_HTTP_RE.fullmatch(value) or _DATA_RE.match(value))


def _is_nested_file(value: str) -> bool:
    # What transform_output wraps (https: or data:, case-sensitive), and can be fetched.
    if value.startswith("https:"):
        return _HTTP_RE.fullmatch(value) is not None
    return value.startswith("data:") and _DATA_RE.match(value) is not None


def normalise_output(raw: object) -> list[OutputItem]:
    """Turn a prediction's raw JSON output into output items, in order.

    None gives nothing; a URL or a (nested) list of URLs gives files; a string or a list
    of strings (streamed tokens) gives one text, ending with a newline; anything else
    gives the files found inside it (each with its ``key_path``, sorted keys first) and
    then one JSON document of the whole output, still holding the URLs (`plan_outputs`
    replaces them with the local names).
    """
    if raw is None:
        return []
    if isinstance(raw, str):
        if is_file_url(raw):
            return [OutputItem.file(raw)]
        return [_text(raw)]
    if isinstance(raw, list | tuple):
        flat = _flatten(raw)
        if flat and all(isinstance(v, str) and is_file_url(v) for v in flat):
            return [OutputItem.file(str(v), (n,)) for n, v in enumerate(flat)]
        if not raw:
            return []
        if all(isinstance(v, str) for v in raw):
            # Tokens may themselves look like URLs; a flat list of strings that are not
            # all URLs is one answer, as Replicate's "concatenate" display shows it.
            return [_text("".join(str(v) for v in raw))]
    files = [OutputItem.file(url, path) for path, url in _files_inside(raw)]
    return [*files, OutputItem.inline(OutputKind.JSON, _json(raw))]


def plan_output_names(job: Job, items: Sequence[OutputItem]) -> list[str]:
    """Name each item's file, relative to the output folder, from ``job.output``.

    See the module docstring for the names. The extension comes from the URL's path,
    else a data URI's media type, else ``.bin``; text is ``.txt``, JSON ``.json``.
    Raise `UnsafeOutputNameError` if the stem would leave the output folder.
    """
    problem = check_output_stem(job.output)
    if problem is not None:
        raise UnsafeOutputNameError(f"output {job.output!r}: {problem}")
    stem = job.output
    if not _structured(items):
        exts = [_extension(item) for item in items]
        if len(items) == 1:
            return [f"{stem}{exts[0]}"]
        return [f"{stem}_{n}{ext}" for n, ext in enumerate(exts)]
    taken: set[str] = set()
    names: list[str] = []
    base = posixpath.basename(stem)
    for item in items:
        ext = _extension(item)
        if item.kind is not OutputKind.FILE:
            names.append(f"{stem}{ext}")
            continue
        tail = _tail(item.key_path)
        if len((base + tail + ext).encode()) > _NAME_MAX:
            digest = hashlib.sha256(repr(item.key_path).encode()).hexdigest()[:16]
            tail = f".k{digest}"
        name, n = f"{stem}{tail}{ext}", 1
        while fold(name) in taken or fold(name).endswith(ENGINE_FILES.sidecar_suffix):
            n += 1
            name = f"{stem}{tail}-{n}{ext}"
        taken.add(fold(name))
        names.append(name)
    return names


def plan_outputs(job: Job, items: Sequence[OutputItem]) -> list[PlannedOutput]:
    """Name each item (`plan_output_names`) and localise structured documents.

    In the JSON document of a structured output, each file URL is replaced by its
    file's name relative to the document (same folder), so it can be used offline.
    """
    names = plan_output_names(job, items)
    if not _structured(items):
        return [PlannedOutput(name, item) for item, name in zip(items, names, strict=True)]
    local = {
        item.key_path: posixpath.basename(name)
        for item, name in zip(items, names, strict=True)
        if item.kind is OutputKind.FILE
    }
    planned: list[PlannedOutput] = []
    for item, name in zip(items, names, strict=True):
        if item.kind is OutputKind.JSON and item.text is not None:
            value = _localise(json.loads(item.text), local)
            planned.append(PlannedOutput(name, replace(item, text=_json(value))))
        else:
            planned.append(PlannedOutput(name, item))
    return planned


def check_output_stem(stem: str) -> str | None:
    """Return why ``stem`` is not a safe, portable relative file stem, or None if it is.

    Safe means: relative, ``/``-separated, no empty, ``.`` or ``..`` segment, no
    backslash (a separator on Windows), no control character, and each segment
    portable (`jobs.names`: none of ``<>:"|?*``, no trailing dot or space, no device
    name such as ``CON`` or ``com1.png``).
    """
    if not stem:
        return "is empty"
    if stem.startswith("/") or re.match(r"[A-Za-z]:", stem):
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
        problem = portability_problem(segment)
        if problem is not None:
            return problem
    return None


def _text(text: str) -> OutputItem:
    return OutputItem.inline(OutputKind.TEXT, text if text.endswith("\n") else text + "\n")


def _json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def _structured(items: Sequence[OutputItem]) -> bool:
    # Files beside a JSON document were found inside it.
    kinds = {item.kind for item in items}
    return OutputKind.JSON in kinds and OutputKind.FILE in kinds


def _files_inside(raw: object) -> Iterator[tuple[KeyPath, str]]:
    """Yield (key path, file string) of every file in ``raw``, depth first, sorted keys."""
    stack: list[tuple[KeyPath, object]] = [((), raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if path and _is_nested_file(value):
                yield path, value
        elif isinstance(value, dict):
            keys = sorted(value, key=str)
            stack.extend(((*path, str(k)), value[k]) for k in reversed(keys))
        elif isinstance(value, list | tuple):
            stack.extend(((*path, i), value[i]) for i in reversed(range(len(value))))


def _tail(path: KeyPath) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"_{part}")
        else:
            slug = _SLUG_RE.sub("-", part).strip("-")[:_SLUG_MAX].strip("-") or "key"
            parts.append(f".{slug}")
    return "".join(parts)


def _localise(value: object, local: dict[KeyPath, str], path: KeyPath = ()) -> object:
    if path in local:
        return local[path]
    if isinstance(value, dict):
        return {k: _localise(v, local, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_localise(v, local, (*path, i)) for i, v in enumerate(value)]
    return value


def _flatten(values: Sequence[object]) -> list[object]:
    out: list[object] = []
    for value in values:
        if isinstance(value, list | tuple):
            out.extend(_flatten(value))
        else:
            out.append(value)
    return out


def _extension(item: OutputItem) -> str:
    if item.kind is OutputKind.TEXT:
        return ".txt"
    if item.kind is OutputKind.JSON:
        return ".json"
    url = item.url or ""
    data = _DATA_RE.match(url)
    if data is not None:
        return _extension_for_type(data["type"] or "text/plain")
    suffix = posixpath.splitext(urlsplit(url).path)[1].lower()
    if _EXT_RE.fullmatch(suffix):
        return suffix
    return _FALLBACK_EXT


def _extension_for_type(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    ext = _EXTENSIONS.get(media) or mimetypes.guess_extension(media, strict=False) or ""
    return ext if _EXT_RE.fullmatch(ext) else _FALLBACK_EXT
