"""Keep a download's part file: where it lives, where its bytes came from, how it ends.

A file is never visible under its final name until it is whole: it is written as
``name.part`` and renamed into place. Disk errors (full, read-only, permission) become
`StorageError`, never retried.

A part is resumed only when it provably holds the first bytes of the very file asked
for. When a part is started, ``name.part.meta`` beside it records the source: the sha256
of the URL (not the URL: no signed query string lands on disk) and the validators of the
answer the bytes came from, a strong ``ETag``, else ``Last-Modified`` with the total
size. A resume sends ``Range`` with ``If-Range`` set to that validator, and the ranged
answer's own validators must match the record; a part with no record, another URL's,
or no validator at all is discarded and the file fetched from its first byte. A part, its
record or an output path that is a symlink or anything but a regular file is never
followed, written or appended to (``O_NOFOLLOW``, ``lstat``): the job's download fails
with a message naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Generator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from engine._durable import fsync_dir, write_all
from engine._errors import DownloadError, StorageError
from jobs.names import ENGINE_FILES

__all__ = [
    "PartSource",
    "check_folders",
    "check_regular",
    "discard_part",
    "finish_part",
    "is_stored",
    "open_part",
    "part_path",
    "resumable_source",
    "start_part",
    "storage_errors",
    "write_part",
]

log = structlog.get_logger("engine.download")

# EFBIG: the file outgrew what the file system (or RLIMIT_FSIZE) allows; ENOTDIR: a
# file stands where a folder of outputs should be.
_STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG, errno.ENOTDIR}
)
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def is_stored(path: Path, size: int) -> bool:
    """Tell whether ``path`` is a regular file holding a finished download of ``size`` bytes.

    Only finished files are ever renamed into place, so the size is enough: a file cut
    short stays a ``.part``. A symlink is never taken for a stored file.
    """
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def part_path(dest: Path) -> Path:
    """Return where ``dest`` is written until it is whole: ``name.part`` beside it."""
    return dest.with_name(dest.name + ".part")


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ENGINE_FILES.part_meta_suffix)


def _strong(etag: str | None) -> str | None:
    """Return ``etag`` when it is strong (RFC 9110: a weak one may not be used in If-Range)."""
    return etag if etag and not etag.startswith("W/") else None


@dataclass(frozen=True, slots=True)
class PartSource:
    """Where a part's bytes came from: the URL's digest and the answer's validators."""

    url_sha256: str
    etag: str | None = None  # strong only
    last_modified: str | None = None
    size: int | None = None  # the whole file's, as the answer stated it

    @classmethod
    def of(cls, url: str, headers: Mapping[str, str], size: int | None) -> PartSource:
        """Return the source of an answer to a GET of ``url`` (``headers``: its headers)."""
        return cls(
            _url_digest(url),
            _strong(headers.get("etag")),
            headers.get("last-modified"),
            size,
        )

    @property
    def provable(self) -> bool:
        """Tell whether a later answer can prove it serves the same bytes."""
        return self.etag is not None or (self.last_modified is not None and self.size is not None)

    @property
    def if_range(self) -> str | None:
        """Return the validator to send as ``If-Range`` (the strong ETag first)."""
        return self.etag or self.last_modified

    def matches(self, headers: Mapping[str, str], size: int | None) -> bool:
        """Tell whether a ranged answer (``headers``, stated total ``size``) is this source.

        An unprovable source (only ever resumed within the attempt that read its prefix)
        has nothing to compare and matches.
        """
        if self.etag is not None:
            return _strong(headers.get("etag")) == self.etag
        if not self.provable:
            return True
        return size == self.size and headers.get("last-modified") == self.last_modified


def _url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _refuse(path: Path, what: str, url: str | None) -> DownloadError:
    return DownloadError(
        f"refusing to write through {path}: it is {what}; outputs and their parts are only "
        "written as regular files (remove it and run again)",
        url=url,
    )


def check_regular(path: Path, url: str | None = None) -> None:
    """Raise `DownloadError` when ``path`` exists as anything but a regular file."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _storage_error(exc, path, url) from exc
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "a symlink", url)
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "not a regular file", url)


def check_folders(root: Path, name: str) -> None:
    """Raise `DownloadError` when a folder of ``name`` below ``root`` is a symlink.

    An output ``a/b.png`` must land in ``root/a``, not wherever a link named ``a``
    points. (A race with a link made after the check is not covered: that needs
    ``openat`` relative to a folder descriptor all the way down.)
    """
    folder = root
    for part in name.split("/")[:-1]:
        folder = folder / part
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(folder.lstat().st_mode):
                kind = "a symlink" if folder.is_symlink() else "not a folder"
                raise _refuse(folder, kind, None)


def open_part(path: Path, flags: int, url: str | None = None) -> int:
    """Open ``path`` without following a symlink; refuse anything but a regular file."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for its other end; a regular
        # file ignores the flag.
        fd = os.open(path, flags | _NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(path, "a symlink", url) from exc
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise _refuse(path, "not a regular file", url) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(path, "not a regular file", url)
    return fd


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
            with contextlib.suppress(OSError):
                _meta_path(part).unlink()
        raise _storage_error(exc, dest, url) from exc


def start_part(dest: Path, source: PartSource | None, safe: str) -> None:
    """Record where the part of ``dest`` about to be started comes from (before its bytes)."""
    meta = _meta_path(part_path(dest))
    if source is None:
        with contextlib.suppress(FileNotFoundError):
            check_regular(meta, safe)
            meta.unlink()
        return
    fd = open_part(meta, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safe)
    try:
        write_all(fd, json.dumps(asdict(source)).encode())
    finally:
        os.close(fd)


def write_part(first_bytes: bytes, dest: Path, safe: str, source: PartSource | None) -> None:
    """Start ``dest``'s part with the file's first bytes, for a transfer to resume from."""
    part = part_path(dest)
    with storage_errors(dest, part, safe):
        dest.parent.mkdir(parents=True, exist_ok=True)
        start_part(dest, source, safe)
        fd = open_part(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, safe)
        try:
            write_all(fd, first_bytes)
        finally:
            os.close(fd)


def resumable_source(dest: Path, url: str, safe: str) -> PartSource | None:
    """Return the recorded source of ``dest``'s part when it may be resumed from ``url``.

    A part that cannot be proven to be the start of ``url``'s file is discarded (None).
    Raise `DownloadError` when the part or its record is a symlink or not a regular file.
    """
    part = part_path(dest)
    check_regular(part, safe)
    check_regular(_meta_path(part), safe)
    if not part.exists():
        return None
    source: PartSource | None = None
    try:
        data = json.loads(_meta_path(part).read_bytes())
        source = PartSource(
            url_sha256=str(data["url_sha256"]),
            etag=data.get("etag"),
            last_modified=data.get("last_modified"),
            size=data.get("size"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        why = "no record of its source"
    else:
        if source.url_sha256 != _url_digest(url):
            why = "started from another URL"
        elif not source.provable:
            why = "no validator (ETag, or Last-Modified and size) to prove its source"
        else:
            return source
    log.info("download.part_discarded", name=dest.name, reason=why)
    discard_part(dest)
    return None


def discard_part(dest: Path) -> None:
    """Remove ``dest``'s part and its record (a symlink is removed, never followed)."""
    part = part_path(dest)
    for path in (part, _meta_path(part)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def finish_part(part: Path, dest: Path) -> None:
    """Rename the verified part into place and make the rename durable."""
    part.replace(dest)
    with contextlib.suppress(FileNotFoundError):
        _meta_path(part).unlink()
    fsync_dir(dest.parent)
