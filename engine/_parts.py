"""Keep a download's part file: where it lives, how it starts and ends, disk errors named.

A file is never visible under its final name until it is whole: it is written as
``name.part`` and renamed into place. Disk errors (full, read-only, permission) become
`StorageError`, never retried.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Generator
from pathlib import Path

from engine._durable import fsync_dir
from engine._errors import StorageError

__all__ = ["finish_part", "is_stored", "part_path", "storage_errors", "write_part"]

# EFBIG: the file outgrew what the file system (or RLIMIT_FSIZE) allows; ENOTDIR: a
# file stands where a folder of outputs should be.
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR}
)


def is_stored(path: Path, size: int) -> bool:
    """Tell whether ``path`` holds a finished download of ``size`` bytes.

    Only finished files are ever renamed into place, so the size is enough: a file cut
    short stays a ``.part``.
    """
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def part_path(dest: Path) -> Path:
    """Return where ``dest`` is written until it is whole: ``name.part`` beside it."""
    return dest.with_name(dest.name + ".part")


def _storage_error(exc: OSError, dest: Path, url: str | None) -> StorageError:
    reason = os.strerror(exc.errno) if exc.errno is not None else str(exc)
    return StorageError(f"cannot write {dest}: {reason}", url=url)


@contextlib.contextmanager
def storage_errors(dest: Path, part: Path, url: str | None) -> Generator[None, None, None]:
    """Turn a full disk, a read-only folder or a refused permission into `StorageError`.

    On ENOSPC the part is removed: a full disk should not stay full of parts.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        if exc.errno == errno.ENOSPC:
            with contextlib.suppress(OSError):
                part.unlink()
        raise _storage_error(exc, dest, url) from exc


def write_part(first_bytes: bytes, dest: Path, safe: str) -> None:
    """Start ``dest``'s part with the file's first bytes, for a transfer to resume from."""
    part = part_path(dest)
    with storage_errors(dest, part, safe):
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(first_bytes)


def finish_part(part: Path, dest: Path) -> None:
    """Rename the verified part into place and make the rename durable."""
    part.replace(dest)
    fsync_dir(dest.parent)
