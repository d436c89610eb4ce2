"""``@path`` inputs: local files checked at parse time, keyed by their content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs import check_manifest, read_manifest
from tests.jobs.helpers import Write, assert_located, manifest_error

FLUX = "black-forest-labs/flux-schnell"


def manifest_with(write: Write, value: str) -> Path:
    return write("sub/m.yaml", f"jobs:\n  - model: {FLUX}\n    input:\n      image: '{value}'\n")


def test_file_becomes_an_absolute_path(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub" / "in").mkdir(parents=True)
    (tmp_path / "sub" / "in" / "cat.png").write_bytes(b"png")
    (job,) = read_manifest(manifest_with(write, "@in/cat.png"))
    image = job.input["image"]
    assert isinstance(image, Path)
    assert image.is_absolute()
    assert image.read_bytes() == b"png"


def test_editing_the_file_changes_the_key(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    picture = tmp_path / "sub" / "cat.png"
    picture.write_bytes(b"one")
    path = manifest_with(write, "@cat.png")
    (first,) = read_manifest(path)
    (again,) = read_manifest(path)
    picture.write_bytes(b"two")
    (edited,) = read_manifest(path)
    assert first.key == again.key
    assert first.key != edited.key


def test_files_in_lists_are_resolved(write: Write, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"a")
    path = write("m.jsonl", '{"model": "a/b", "input": {"images": ["@a.png", "@@x", 3]}}\n')
    (job,) = read_manifest(path)
    assert job.input["images"] == [tmp_path / "a.png", "@x", 3]


def test_missing_file_is_an_error(write: Write) -> None:
    path = manifest_with(write, "@nope.png")
    error = manifest_error(path)
    assert_located(error, path, 4, "jobs[0].input.image", "cannot read @nope.png")
    assert "No such file" in error.message


def test_directory_is_an_error(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub" / "folder").mkdir(parents=True)
    path = manifest_with(write, "@folder")
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "is a directory")


def test_broken_symlink_is_an_error(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link.png").symlink_to(tmp_path / "sub" / "gone.png")
    path = manifest_with(write, "@link.png")
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "cannot read @link.png")


def test_fifo_is_an_error(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "pipe")
    path = manifest_with(write, "@pipe")
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_an_error(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    secret = tmp_path / "sub" / "secret.png"
    secret.write_bytes(b"x")
    secret.chmod(0)
    path = manifest_with(write, "@secret.png")
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "Permission denied")


def test_bare_at_is_an_error(write: Write) -> None:
    path = manifest_with(write, "@")
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "'@@'")


def test_jsonl_file_error_names_the_input_field(write: Write) -> None:
    path = write("m.jsonl", '{"model": "a/b"}\n{"model": "a/b", "input": {"img": "@x.png"}}\n')
    assert_located(manifest_error(path), path, 2, "input.img", "cannot read @x.png")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"private")
    return secret


@pytest.mark.parametrize("value", ["@../secret.txt", "@./../secret.txt", "@in/../../secret.txt"])
def test_paths_leaving_the_folder_are_refused(write: Write, outside: Path, value: str) -> None:
    path = manifest_with(write, value)
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "outside the manifest")


def test_absolute_paths_outside_are_refused(write: Write, outside: Path) -> None:
    path = manifest_with(write, f"@{outside}")
    assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "outside the manifest")


def test_symlinks_that_resolve_outside_count_as_outside(
    write: Write, outside: Path, tmp_path: Path
) -> None:
    (tmp_path / "sub" / "innocent.png").symlink_to(outside)
    (tmp_path / "sub" / "dir").symlink_to(tmp_path, target_is_directory=True)
    for value in ("@innocent.png", "@dir/secret.txt"):
        path = manifest_with(write, value)
        assert_located(manifest_error(path), path, 4, "jobs[0].input.image", "outside the manifest")


def test_nested_values_outside_are_refused(write: Write, outside: Path) -> None:
    path = write("sub/m.jsonl", '{"model": "a/b", "input": {"i": [{"x": "@../secret.txt"}]}}\n')
    assert_located(manifest_error(path), path, 1, "input.i[0].x", "outside the manifest")


def test_files_outside_are_read_when_allowed(write: Write, outside: Path, tmp_path: Path) -> None:
    (tmp_path / "sub" / "link.png").symlink_to(outside)
    for value in ("@../secret.txt", f"@{outside}", "@link.png"):
        path = manifest_with(write, value)
        (job,) = read_manifest(path, allow_outside_files=True)
        assert job.input["image"].read_bytes() == b"private"
        assert check_manifest(path, allow_outside_files=True).ok


def test_absolute_paths_and_symlinks_inside_are_fine(write: Write, tmp_path: Path) -> None:
    (tmp_path / "sub" / "in").mkdir(parents=True)
    (tmp_path / "sub" / "in" / "cat.png").write_bytes(b"png")
    (tmp_path / "sub" / "alias.png").symlink_to(tmp_path / "sub" / "in" / "cat.png")
    for value in (f"@{tmp_path / 'sub' / 'in' / 'cat.png'}", "@alias.png", "@in/../in/cat.png"):
        (job,) = read_manifest(manifest_with(write, value))
        assert job.input["image"].read_bytes() == b"png"
