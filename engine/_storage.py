"""Check, before anything is paid for, that the output folder can take files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from engine._errors import StorageError

__all__ = ["check_output_folder"]


def check_output_folder(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written in it.

    Raise `StorageError` naming the folder and the reason (a file in the way, a
    read-only disk, no permission): a run that cannot keep its outputs must stop before
    its first create, not after paying for every prediction.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(fd)
        Path(probe).unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = folder.resolve()
        raise StorageError(f"cannot write to the output folder {where}: {reason}") from exc
