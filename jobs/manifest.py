"""Read a manifest (YAML or JSONL) into `Job` values, streamed, with located errors.

`read_manifest` yields jobs as it reads and raises the first `ManifestError`;
`check_manifest` reads to the end and collects every error, for ``validate``. A caller
that must not spend before the whole manifest is known good runs `check_manifest`
first: both stream, so two passes cost time, not memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs._builder import Builder
from jobs._readers import read_jsonl, read_yaml
from jobs.errors import ManifestError
from jobs.model import Job

__all__ = ["ManifestSummary", "check_manifest", "read_manifest"]

_YAML_SUFFIXES = (".yaml", ".yml")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class ManifestSummary:
    """What `check_manifest` found: the valid jobs by model, and every error."""

    path: str
    jobs: int
    by_model: Mapping[str, int]
    errors: tuple[ManifestError, ...]

    @property
    def ok(self) -> bool:
        """Tell whether the manifest can be run as is."""
        return not self.errors


def read_manifest(
    path: Path, *, trust_earlier_check: bool = False, allow_outside_files: bool = False
) -> Iterator[Job]:
    """Yield the jobs of the manifest at ``path`` in order; raise the first `ManifestError`.

    The format follows the suffix: ``.yaml``/``.yml`` or ``.jsonl``/``.ndjson``. Memory
    stays at one job plus one short entry per job for duplicate and name detection.

    ``trust_earlier_check=True`` is a promise that these very bytes were read to the end
    without error before (by `check_manifest` or a reading without it): duplicate ids,
    jobs and clashing output names are then NOT detected (memory stays at one job), and
    an explicit id and its input are not checked again. Pass it only right after such a
    check of an unchanged file.

    ``@path`` inputs must resolve (symlinks followed) inside the manifest's folder unless
    ``allow_outside_files=True``: a manifest from someone else cannot send out any file
    the user can read.
    """
    entries = _entries(
        path, trust_earlier_check=trust_earlier_check, allow_outside_files=allow_outside_files
    )
    for item in entries:
        if isinstance(item, ManifestError):
            raise item
        yield item


def check_manifest(
    path: Path, *, max_errors: int = 1000, allow_outside_files: bool = False
) -> ManifestSummary:
    """Read the whole manifest and collect every error (up to ``max_errors``).

    A problem confined to one job is reported and reading goes on; one that stops the
    parser (a YAML syntax error) ends the scan there. ``allow_outside_files`` is as for
    `read_manifest`.
    """
    errors: list[ManifestError] = []
    by_model: dict[str, int] = {}
    count = 0
    try:
        for item in _entries(path, allow_outside_files=allow_outside_files):
            if isinstance(item, ManifestError):
                if len(errors) < max_errors:
                    errors.append(item)
            else:
                count += 1
                model = str(item.model)
                by_model[model] = by_model.get(model, 0) + 1
    except ManifestError as exc:
        errors.append(exc)
    return ManifestSummary(str(path), count, by_model, tuple(errors))


def _entries(
    path: Path, *, trust_earlier_check: bool = False, allow_outside_files: bool = False
) -> Iterator[Job | ManifestError]:
    source = str(path)
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        reader = read_yaml
    elif suffix in _JSONL_SUFFIXES:
        reader = read_jsonl
    else:
        raise ManifestError(
            f"unknown manifest format {suffix or '(no suffix)'!r}: "
            "name it .yaml, .yml, .jsonl or .ndjson",
            path=source,
        )
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ManifestError(f"cannot read the manifest: it {problem}", path=source)
    builder = Builder(
        path,
        source,
        trust_earlier_check=trust_earlier_check,
        allow_outside_files=allow_outside_files,
    )
    try:
        for entry in reader(path, source):
            if isinstance(entry, ManifestError):
                yield entry
            elif entry.kind == "defaults":
                yield from builder.defaults(entry)
            else:
                try:
                    yield builder.job(entry)
                except ManifestError as exc:
                    yield exc
    except OSError as exc:
        raise ManifestError(f"cannot read the manifest: {exc.strerror}", path=source) from None
    if builder.index == 0:
        yield ManifestError("the manifest has no jobs", path=source)
