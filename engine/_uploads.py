"""Read ``@file`` inputs for upload safely: never block, never send a file mid-change.

The manifest check saw a regular file; by the time the job is created it may be a FIFO
(whose open or read would block the run forever), gone, or being rewritten. Each file
is opened without blocking, must still be a regular file, and is read whole in a worker
thread; its size, modification time and identity must be the same after the read as
before it. Anything else is an `InputFileError`: that job fails, the run goes on.

The bytes are held in memory until the create is answered, so that a retried create
sends the same bytes (replicate's client would open the path again on every attempt).
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import anyio

from engine._errors import InputFileError

__all__ = ["read_input_files"]

_CHUNK = 1 << 20
_PLAIN = frozenset({str, int, float, bool, type(None)})


async def read_input_files(value: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``value`` with every local path replaced by its bytes, as a named file object."""
    if all(type(v) in _PLAIN for v in value.values()):
        return dict(value)  # the common case (a prompt, numbers): no walk, no awaits
    return {k: await _resolve(v) for k, v in value.items()}


async def _resolve(value: Any) -> Any:
    if isinstance(value, PurePath):
        return await anyio.to_thread.run_sync(_read, Path(value))
    if isinstance(value, Mapping):
        return {k: await _resolve(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [await _resolve(v) for v in value]
    return value


def _read(path: Path) -> io.BytesIO:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(
            f"@file {path} is gone (deleted after the manifest was read)"
        ) from None
    except OSError as exc:
        raise InputFileError(f"@file {path} cannot be read: {_reason(exc)}") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise InputFileError(
                f"@file {path} is not a regular file any more (a FIFO or device cannot be sent)"
            )
        chunks = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise InputFileError(f"@file {path} cannot be read: {_reason(exc)}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    stamp = (before.st_size, before.st_mtime_ns)
    if len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != stamp:
        raise InputFileError(
            f"@file {path} changed while being read ({len(data)} bytes read, "
            f"{before.st_size} expected); nothing was sent"
        )
    try:
        now = path.stat()
    except OSError:
        raise InputFileError(
            f"@file {path} was deleted while being read; nothing was sent"
        ) from None
    if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
        raise InputFileError(f"@file {path} was replaced while being read; nothing was sent")
    named = io.BytesIO(data)
    named.name = path.name  # the upload's file name, as replicate takes it from the object
    return named


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)
