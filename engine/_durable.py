"""Write a file so that a crash leaves the old one or the new one whole: write, fsync, rename.

`write_durably` is the whole sequence for a payload in memory (the report, the precheck
stamp). Its steps are exposed for the downloader, which writes on the event loop and
waits for the disk in a worker thread: `write_all` (page-cache writes, no disk wait) and
`commit` (fsync the file, rename it into place, fsync the folder so the rename persists).
`fsync_dir` persists a rename made elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["commit", "fsync_dir", "write_all", "write_durably"]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def commit(fd: int, part: Path, dest: Path, folder: int) -> None:
    """Make a written part durable, rename it into place, make the rename durable."""
    os.fsync(fd)
    part.replace(dest)
    os.fsync(folder)


def fsync_dir(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename into it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader or a crash sees the old file or the new one.

    The folder is created when missing. Raise OSError when the disk refuses; no temporary
    file is left behind then.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Per process: two writers of one file (two runs' precheck stamps) never share a
    # temporary. Named "<name>.<pid>.tmp", not ".<name>.tmp": the engine's files keep their
    # temporaries inside the names jobs.ENGINE_FILES reserves (``.report`` is a valid
    # output stem, and ``.report.json.tmp`` lies in its namespace).
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    try:
        write_all(fd, data)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            commit(fd, tmp, path, folder)
        finally:
            os.close(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)
