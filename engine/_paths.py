"""Check the paths a command reads and writes before anything is written or paid.

Each problem is one `ConfigError` line that names the flag and says what is wrong: a
folder where a file is wanted (or the reverse), a missing folder, a FIFO or device, two
roles on one file. Two paths are the same file when they resolve to the same place
(symlinks followed) or, for files that exist, share a device and inode (hard links).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from itertools import combinations
from pathlib import Path

from engine._errors import ConfigError
from engine._journal import lock_path
from jobs import Job
from jobs.names import ENGINE_FILES, fold, tail_owns

__all__ = ["InputsApart", "check_apart_from_outputs", "check_paths", "engine_files"]


def check_paths(
    *,
    reads: Mapping[str, Path | None],
    writes: Mapping[str, Path | None],
    output_dir: Path | None = None,
    kept: Mapping[str, Path] | None = None,
) -> None:
    """Raise `ConfigError` unless every path can play its role, each on its own file.

    ``reads`` and ``writes`` map a role as the user knows it (``"the manifest"``,
    ``"--state"``, ``"--json-logs"``, ``"the report"``) to its path; None is skipped.
    ``output_dir`` must be a folder or creatable; a file written inside it may wait for
    the run to create it, any other file's folder must exist already (a mistyped
    ``--state`` folder is refused rather than made). ``kept`` are the engine's files a
    command neither reads nor writes but must not write over (`engine_files`).
    """
    if output_dir is not None:
        _check_folder(output_dir)
    for role, path in reads.items():
        if path is not None:
            _check_readable(role, path)
    present = {role: path for role, path in writes.items() if path is not None}
    for role, path in present.items():
        _check_writable(role, path, output_dir)
    named = {role: path for role, path in reads.items() if path is not None} | present
    for (role_a, a), (role_b, b) in combinations(named.items(), 2):
        if _same_file(a, b):
            raise ConfigError(f"{role_a} and {role_b} are the same file ({a}); give each its own")
    for role, path in named.items():
        for role_kept, kept_path in (kept or {}).items():
            if _same_file(path, kept_path):
                raise ConfigError(
                    f"{role} {path} is {role_kept}, one of the engine's own files; "
                    "name another file"
                )


def engine_files(output_dir: Path, journal: Path) -> dict[str, Path]:
    """Return the files the engine keeps for a run, by the role a message names them with.

    For the commands that write beside a run (``export --output``, ``gallery``): none of
    them may be written over. The journal itself is the caller's to name (it is read).
    """
    return {
        "the journal's lock": lock_path(journal),
        "the report": output_dir / ENGINE_FILES.report,
        "the gallery": output_dir / ENGINE_FILES.gallery,
        "the manifest check's stamp": journal.parent / ENGINE_FILES.stamp,
    }


def check_apart_from_outputs(
    output_dir: Path, files: Mapping[str, Path | None], jobs: Callable[[], Iterable[Job]]
) -> None:
    """Raise `ConfigError` when a file the engine writes could be a job's output.

    ``files`` are the engine's files the user placed (``--state``, ``--json-logs``); one
    inside the output folder must not lie in a job's namespace (``stem``, ``stem.ext``,
    ``stem_0.ext``, ``stem/...``) nor take an engine name the jobs cannot have. Names
    are compared as file systems do (`jobs.names.fold`). ``jobs`` is read only when such
    a file exists: the common case costs nothing.
    """
    inside: dict[str, tuple[Path, str]] = {}
    root = output_dir.absolute().resolve()
    for role, path in files.items():
        if path is None:
            continue
        where = path.absolute().resolve()
        if where.is_relative_to(root):
            inside[role] = (path, fold(where.relative_to(root).as_posix()))
    if not inside:
        return
    engine_names = {fold(ENGINE_FILES.gallery), fold(ENGINE_FILES.stamp)}
    for role, (path, name) in inside.items():
        if name in engine_names or name.endswith(ENGINE_FILES.sidecar_suffix):
            raise ConfigError(f"{role} {path} takes the name of one of the engine's own files")
    for job in jobs():
        stem = fold(job.output)
        for role, (path, name) in inside.items():
            rest = name[len(stem) :] if name.startswith(stem) else None
            owned = rest is not None and (not rest or rest.startswith("/") or tail_owns(rest))
            if owned or stem.startswith(f"{name}/"):  # or a folder of the job's takes it
                raise ConfigError(
                    f"{role} {path} could be written over by the outputs of job {job.key!r} "
                    f"({job.where}); put it outside {output_dir} or name it apart"
                )


def _check_folder(folder: Path) -> None:
    """Refuse an output folder that is a file, or that sits under one."""
    for candidate in (folder, *folder.parents):
        try:
            info = candidate.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # an ancestor that is a file is found further up
        except OSError as exc:
            raise ConfigError(f"output dir {folder}: {_reason(exc)}") from None
        if stat.S_ISDIR(info.st_mode):
            return
        if candidate == folder:
            raise ConfigError(f"output dir {folder} is a file, not a folder")
        raise ConfigError(f"output dir {folder} cannot be made: {candidate} is a file")


def _check_writable(role: str, path: Path, output_dir: Path | None) -> None:
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        info = None
    except OSError as exc:
        raise ConfigError(f"{role} {path}: {_reason(exc)}") from None
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{role} {path} is a folder; name a file")
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would block the run forever; a device is not a record of anything.
            raise ConfigError(f"{role} {path} is not a regular file")
        return
    parent = path.parent
    if output_dir is not None and _inside(parent, output_dir):
        return  # the run makes its output folder (already checked) and what is under it
    if not parent.exists():
        raise ConfigError(f"{role} {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{role} {path}: {parent} is not a folder")


def _check_readable(role: str, path: Path) -> None:
    """Refuse a folder, FIFO or device where a file is read; a missing one is said later."""
    try:
        info = path.stat()
    except OSError:
        return  # the reader names what is missing or unreadable, in its own words
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{role} {path} is a folder; name a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{role} {path} is not a regular file")  # a FIFO would block


def _inside(path: Path, folder: Path) -> bool:
    return path.absolute().resolve().is_relative_to(folder.absolute().resolve())


def _same_file(a: Path, b: Path) -> bool:
    if a.absolute().resolve() == b.absolute().resolve():
        return True
    try:
        first, second = a.stat(), b.stat()
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


_SEEN_LIMIT = 4096  # distinct @files remembered, so a shared one is placed once


class InputsApart:
    """Refuse an ``@file`` input that lies where the run may write (the user's data).

    Call it with every ``@file`` of every job (`engine._precheck.checked_job_count` does),
    then `check` once with the manifest's jobs. Refused: an engine file of the run (the
    journal, its lock, the report, the gallery, the logs), a name at the output root in a
    reserved namespace (``journal``, ``report``, ``index``, ``.manifest-checked``), and a
    name inside any job's namespace (`jobs.names`, rule 3: ``in.png`` for job ``in``), where
    an output, its ``.part`` or its sidecar would be written over it. Any other file inside
    the output folder is read as it is: ``--output-dir .`` beside the inputs is common.
    """

    def __init__(self, output_dir: Path, engine_files: Mapping[str, Path | None]) -> None:
        self.output_dir = output_dir
        self.root = output_dir.absolute().resolve()
        self.engine = {p.absolute().resolve(): r for r, p in engine_files.items() if p is not None}
        # A stem (folded) -> the @files inside the output folder that would lie in its
        # namespace: one dict lookup per job in `check`, whatever the number of files.
        self.under: dict[str, list[tuple[str, Job, Path]]] = {}
        self.seen: set[Path] = set()  # one file shared by many jobs is placed once

    def __call__(self, job: Job, path: Path) -> None:
        if path in self.seen:
            return
        if len(self.seen) >= _SEEN_LIMIT:
            self.seen.clear()  # only a shortcut: a file placed twice is checked alike
        self.seen.add(path)
        real = path.resolve()
        role = self.engine.get(real)
        if role is not None:
            raise ConfigError(f"{job.where}: @file {path} is {role}, which the run writes")
        if not real.is_relative_to(self.root):
            return
        name = fold(real.relative_to(self.root).as_posix())
        if "/" not in name and any(
            name == stem or (name.startswith(stem) and tail_owns(name[len(stem) :]))
            for stem in (*ENGINE_FILES.reserved_stems, ENGINE_FILES.stamp_prefix)
        ):
            raise ConfigError(
                f"{job.where}: @file {path} takes a name the engine keeps in {self.output_dir}; "
                "move it out of the output folder"
            )
        cuts = [i for i, char in enumerate(name) if char in "._" and i > 0]
        for cut in (*cuts, len(name)):
            self.under.setdefault(name[:cut], []).append((name, job, path))

    def check(self, jobs: Callable[[], Iterable[Job]]) -> None:
        """Raise `ConfigError` naming the first @file a job's outputs could write over."""
        if not self.under:
            return  # the common case: no @file inside the output folder, no second read
        for job in jobs():
            stem = fold(job.output)
            for name, user, path in self.under.get(stem, ()):
                rest = name[len(stem) :]
                if not rest or tail_owns(rest):  # "a/x.png" is no output of job "a"
                    raise ConfigError(
                        f"{user.where}: @file {path} lies where job {job.key!r} ({job.where}) "
                        f"writes its outputs in {self.output_dir}; move it out of the "
                        "output folder or choose another --output-dir"
                    )
