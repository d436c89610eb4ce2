"""Assertions shared by the manifest tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from jobs import ManifestError, check_manifest, read_manifest

Write = Callable[[str, str], Path]


def manifest_error(path: Path) -> ManifestError:
    """Read ``path`` to the end and return the ManifestError it raises."""
    with pytest.raises(ManifestError) as info:
        list(read_manifest(path))
    # validate must see the same first error.
    assert check_manifest(path).errors[0] == info.value or str(
        check_manifest(path).errors[0]
    ) == str(info.value)
    return info.value


def assert_located(
    error: ManifestError, path: Path, line: int | None, field: str | None, fragment: str
) -> None:
    """Assert ``error`` names the file, line, field and says ``fragment``."""
    assert fragment in error.message, error.message
    assert (error.path, error.line, error.field) == (str(path), line, field), str(error)
    where = str(path) if line is None else f"{path}:{line}"
    prefix = f"{where}: {field}: " if field else f"{where}: "
    assert str(error) == prefix + error.message
