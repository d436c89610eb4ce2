"""Files inside structured outputs: every one on disk, verified, journaled, and localised.

One job per output shape the emulator serves (an object with a file, an object of
files, lists of files in an object, a list of objects, deep nesting, a deployment),
plus data: URIs at any depth and a resume that fetches only what a kill left missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import run_jobs
from jobs import read_manifest
from tests.conftest import FAST_CONFIG
from tests.e2e.helpers import (
    assert_files_match_journal,
    cli_env,
    engine_config,
    journal_records,
    write_jsonl,
)

pytestmark = pytest.mark.anyio

IMAGE = "https://example.com/photo.png"
SHAPES: dict[str, dict[str, Any]] = {
    "caption": {"model": "emulator/captioner", "input": {"image": IMAGE}},
    "clip": {"model": "emulator/video-thumbnail", "input": {"prompt": "waves"}},
    "seg": {"model": "emulator/segment-anything", "input": {"image": IMAGE, "max_masks": 3}},
    "det": {"model": "emulator/detect-objects", "input": {"image": IMAGE, "max_objects": 2}},
    "views": {"model": "emulator/multiview", "input": {"prompt": "a chair", "num_views": 2}},
    "deployed": {"model": "deployments/emulator/segment", "input": {"image": IMAGE}},
}
# What each document must hold, by key path, once its URLs are local names.
EXPECTED_FILES = {
    "caption": {"caption.image.png"},
    "clip": {"clip.video.mp4", "clip.thumbnail.png"},
    "seg": {"seg.masks_0.png", "seg.masks_1.png", "seg.masks_2.png"},
    "det": {"det_0.mask.png", "det_1.mask.png"},
    "views": {
        "views.preview.png",
        "views.views_0.image.png",
        "views.views_0.depth.map.png",
        "views.views_1.image.png",
        "views.views_1.depth.map.png",
    },
    "deployed": {"deployed.masks_0.png", "deployed.masks_1.png", "deployed.masks_2.png"},
}


def manifest_of_every_shape(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "m.jsonl", [{"id": k, **v} for k, v in SHAPES.items()])


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def assert_localised(out: Path, key: str) -> set[str]:
    """Check ``key.json`` points at files beside it, none remote; return their names."""
    document = json.loads((out / f"{key}.json").read_text())
    local = {s for s in strings_in(document) if (out / s).is_file()}
    remote = [s for s in strings_in(document) if s.startswith(("https:", "data:"))]
    assert remote == [], f"{key}.json still holds remote files: {remote}"
    assert local == EXPECTED_FILES[key]
    return local


async def test_every_file_of_every_shape_is_on_disk_verified_and_journaled(
    emulator_server, tmp_path
):
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)

    summary = await run_jobs(lambda: read_manifest(manifest_of_every_shape(tmp_path)), config)

    assert (summary.done, summary.failed, summary.exit_code) == (6, 0, 0)
    files = set()
    for key in SHAPES:
        files |= assert_localised(out, key)
    # Every file and every document is journaled with its size and checksum.
    journaled = assert_files_match_journal(out, config.journal_path)
    assert journaled == len(files) + len(SHAPES)
    assert summary.files_downloaded == journaled
    # The captioner's text stays in the document; the masks' numbers too.
    caption = json.loads((out / "caption.json").read_text())
    assert isinstance(caption["caption"], str)
    assert caption["image"] == "caption.image.png"
    seg = json.loads((out / "seg.json").read_text())
    assert len(seg["boxes"]) == len(seg["masks"]) == 3
    assert (out / "clip.video.mp4").stat().st_size == FAST_CONFIG.video_size


async def test_a_resume_after_a_kill_mid_download_fetches_only_the_missing_files(
    emulator_server, tmp_path
):
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    manifest = manifest_of_every_shape(tmp_path)
    await run_jobs(lambda: read_manifest(manifest), config)
    # What a kill leaves after views' first two files: their records, then nothing.
    lines = config.journal_path.read_text().splitlines(keepends=True)
    views = [n for n, line in enumerate(lines) if json.loads(line).get("k") == "views"]
    file_lines = [n for n in views if json.loads(lines[n])["e"] == "file"]
    cut = file_lines[2]
    kept_lines = lines[:cut] + [
        line for n, line in enumerate(lines[cut:], cut) if json.loads(line).get("k") != "views"
    ]
    config.journal_path.write_text("".join(kept_lines))
    kept = {json.loads(lines[n])["n"] for n in file_lines[:2]}
    missing = {json.loads(lines[n])["n"] for n in file_lines[2:]}
    for name in missing:
        (out / name).unlink()
    before = {name: (out / name).stat().st_mtime_ns for name in kept}
    journal_lines = len(kept_lines)

    again = await run_jobs(lambda: read_manifest(manifest), config)

    assert (again.done, again.skipped_done, again.predictions_created) == (6, 5, 0)
    assert again.files_downloaded == len(missing)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == before
    new = journal_records(config.journal_path)[journal_lines:]
    assert {r["n"] for r in new if r["e"] == "file"} == missing
    assert_localised(out, "views")
    assert_files_match_journal(out, config.journal_path)


async def test_data_uris_inside_objects_are_written_as_files(emulator_server, tmp_path):
    # Outputs inline as data: URIs (as the sync API sent them), at every depth.
    emulator_server.emulator.update(inline_outputs=True)
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": k, **SHAPES[k]} for k in ("caption", "views", "det")],
    )

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.failed) == (3, 0)
    for key in ("caption", "views", "det"):
        assert_localised(out, key)
    assert (out / "caption.image.png").read_bytes().startswith(b"\x89PNG")
    assert_files_match_journal(out, config.journal_path)
    # Nothing was fetched over the network: the bytes came inside the answers.
    assert emulator_server.emulator.stats.snapshot()["downloads_by_status"] == {}


def test_export_lists_every_file_of_a_structured_output(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", [{"id": "views", **SHAPES["views"]}])
    env = cli_env(emulator_server)
    engine = [sys.executable, "-m", "engine"]
    ran = subprocess.run(
        [*engine, "run", str(manifest), "--output-dir", "out", "--poll-interval", "0.01"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    exported = subprocess.run(
        [*engine, "export", str(manifest), "--output-dir", "out"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {row["file"] for row in rows} == EXPECTED_FILES["views"] | {"views.json"}
    assert {row["job"] for row in rows} == {"views"}
