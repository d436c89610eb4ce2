"""Resolve ``@path`` inputs: checked, kept inside the manifest's folder, keyed by content.

Private to `jobs._builder`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.errors import ManifestError

__all__ = ["LocalFiles", "Where", "remember"]

# Give a field's name, return its line and its qualified name ("jobs[3].input.image").
Where = Callable[[str], tuple[int, str]]
_CACHE_LIMIT = 1024  # distinct @files remembered while reading
_CHUNK = 1 << 20


class LocalFiles:
    """Turn ``@path`` strings into absolute paths, and into content digests for the key.

    A path must resolve (symlinks followed) inside the manifest's folder unless
    ``allow_outside``: a manifest from someone else must not send any file the user
    can read.
    """

    def __init__(self, folder: Path, source: str, *, allow_outside: bool = False) -> None:
        self.source = source
        self.allow_outside = allow_outside
        self.base = folder.absolute()
        self.real_base = self.base.resolve()
        self._files: dict[str, str] = {}

    def error(self, message: str, line: int, field: str) -> ManifestError:
        return ManifestError(message, path=self.source, line=line, field=field or None)

    def resolve(
        self, merged: dict[str, Any], where: Where
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return the job's input (``@file`` as an absolute Path) and the input to key.

        The key sees ``@path#sha256:<content digest>``: editing the file re-runs the job,
        moving the manifest's folder does not.
        """
        if not any(map(_may_hold_file, merged.values())):
            return merged, merged  # the common case, kept cheap: no copies, no walk
        job_input: dict[str, Any] = {}
        key_input: dict[str, Any] = {}
        for name, item in merged.items():
            job_input[name], key_input[name] = self.file_value(item, *where(f"input.{name}"))
        return job_input, key_input

    def file_value(self, value: object, line: int, field: str) -> tuple[Any, Any]:
        if isinstance(value, str) and value.startswith("@"):
            if value.startswith("@@"):
                return value[1:], value  # an escaped literal '@'; the key keeps the escape
            return self.local_file(value[1:], line, field)
        if isinstance(value, list):
            pairs = [self.file_value(v, line, f"{field}[{i}]") for i, v in enumerate(value)]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        if isinstance(value, dict):
            job_part: dict[Any, Any] = {}
            key_part: dict[Any, Any] = {}
            for k, v in value.items():
                job_part[k], key_part[k] = self.file_value(v, line, f"{field}.{k}")
            return job_part, key_part
        return value, value

    def local_file(self, text: str, line: int, field: str) -> tuple[Path, str]:
        if not text:
            raise self.error(
                "'@' must be followed by a file path (write '@@' for '@')", line, field
            )
        if "\x00" in text:  # no file system takes it; os calls raise ValueError
            raise self.error(
                f"@{text} has a NUL character, which no file name can hold", line, field
            )
        path = self.base / text
        try:
            real = path.resolve()
        except (OSError, ValueError) as exc:  # a loop of links, a name too long
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else exc
            raise self.error(f"cannot read @{text}: {reason}", line, field) from None
        if not self.allow_outside and not real.is_relative_to(self.real_base):
            # A manifest from someone else must not send any file the user can read.
            raise self.error(
                f"@{text} is outside the manifest's folder ({self.base}), or links out of "
                "it; such files are sent only when the run is told to allow them",
                line,
                field,
            )
        digest = self._files.get(str(path))
        if digest is None:
            digest = self.hash_file(path, text, line, field)
            remember(self._files, str(path), digest, _CACHE_LIMIT)
        return path, f"@{text}#sha256:{digest}"

    def hash_file(self, path: Path, text: str, line: int, field: str) -> str:
        try:
            info = path.stat()
            if stat.S_ISDIR(info.st_mode):
                raise self.error(f"@{text} is a directory, not a file", line, field)
            if not stat.S_ISREG(info.st_mode):
                # A FIFO or device would block or never end; it cannot be uploaded.
                raise self.error(f"@{text} is not a regular file", line, field)
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
        except (OSError, ValueError) as exc:  # ValueError: a name the OS cannot encode
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else exc
            raise self.error(f"cannot read @{text} ({path}): {reason}", line, field) from None
        return digest.hexdigest()


def remember(cache: dict[str, Any], key: str, value: Any, limit: int) -> None:
    """Store ``key`` in ``cache``, emptying it first once it holds ``limit`` entries."""
    if len(cache) >= limit:
        cache.clear()  # a crude bound: manifests rarely have more distinct values
    cache[key] = value


def _may_hold_file(value: object) -> bool:
    if type(value) is str:
        return value.startswith("@")
    return isinstance(value, list | dict)
