"""Provenance sidecars: ``{stem}.info.json`` says what made each job's outputs."""

from __future__ import annotations

import csv
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import read_manifest, run_jobs
from engine.cli import main
from tests.e2e.helpers import FAILS, FLUX, LLAMA, engine_config, journal_records, write_jsonl
from tests.support import sha256_of

pytestmark = pytest.mark.anyio

SDXL_PINNED = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


def get_prediction(server: Any, prediction_id: str) -> dict[str, Any]:
    """GET the prediction from the emulator, as any API client would."""
    with httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca_file))) as client:
        response = client.get(
            f"{server.base_url}/v1/predictions/{prediction_id}",
            headers={"Authorization": f"Bearer {server.token}"},
        )
    response.raise_for_status()
    return dict(response.json())


async def test_sidecar_matches_the_prediction_field_by_field(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "two", "model": FLUX, "input": {"prompt": "two cats", "num_outputs": 2}},
            {"id": "pinned", "model": SDXL_PINNED, "input": {"prompt": "a cathedral"}},
            {"id": "text", "model": LLAMA, "input": {"prompt": "a haiku"}, "output": "t/{id}"},
        ],
    )
    out = tmp_path / "out"
    summary = await run_jobs(lambda: read_manifest(manifest), engine_config(emulator_server, out))
    assert summary.done == 3

    for stem, files in (("two", 2), ("pinned", 1), ("t/text", 1)):
        sidecar = json.loads((out / f"{stem}.info.json").read_text())
        remote = get_prediction(emulator_server, sidecar["prediction_id"])
        for field in ("model", "version", "input", "status", "error"):
            assert sidecar[field] == remote[field], (stem, field)
        for field in ("created_at", "started_at", "completed_at", "metrics"):
            assert sidecar[field] == remote[field], (stem, field)
        assert sidecar["web_url"] == remote["urls"]["web"]
        assert sidecar["web_url"] == f"https://replicate.com/p/{remote['id']}"
        assert sidecar["logs"] is None  # kept only for failures
        assert len(sidecar["files"]) == files
        for entry in sidecar["files"]:
            path = out / entry["name"]
            assert entry["size"] == path.stat().st_size
            assert entry["sha256"] == sha256_of(path)
        urls = [f["url"] for f in sidecar["files"]]
        if stem == "t/text":
            assert urls == [None]  # joined tokens: written, not downloaded
        else:
            output = remote["output"]
            assert urls == (output if isinstance(output, list) else [output])
    pinned = json.loads((out / "pinned.info.json").read_text())
    assert pinned["requested"] == SDXL_PINNED
    assert pinned["version"] == SDXL_PINNED.split(":")[1]
    unpinned = json.loads((out / "two.info.json").read_text())
    assert unpinned["requested"] == FLUX
    assert unpinned["version"]  # the version that ran, which the manifest did not name


async def test_a_failed_prediction_leaves_its_error_and_logs(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "bad", "model": FAILS, "input": {"prompt": "x"}}]
    )
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, prediction_retries=0)
    summary = await run_jobs(lambda: read_manifest(manifest), config)
    assert summary.failed == 1

    sidecar = json.loads((out / "bad.info.json").read_text())
    remote = get_prediction(emulator_server, sidecar["prediction_id"])
    assert sidecar["status"] == remote["status"] == "failed"
    assert sidecar["error"] == remote["error"]
    assert sidecar["logs"] == remote["logs"]
    assert "Traceback" in sidecar["logs"]
    assert sidecar["files"] == []


async def test_resume_writes_a_sidecar_lost_before_done_was_journaled(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "a", "model": FLUX, "input": {"prompt": "a"}}]
    )
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    await run_jobs(lambda: read_manifest(manifest), config)
    sidecar = out / "a.info.json"
    first = json.loads(sidecar.read_text())
    # A kill after the files, before the sidecar and `done`: drop both.
    sidecar.unlink()
    journal = config.journal_path
    lines = [line for line in journal.read_text().splitlines() if '"e":"done"' not in line]
    journal.write_text("".join(line + "\n" for line in lines))

    await run_jobs(lambda: read_manifest(manifest), config)

    assert json.loads(sidecar.read_text()) == first
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 1
    assert [r["e"] for r in journal_records(journal)].count("done") == 1
    assert not list(out.glob(".*.tmp"))


async def test_no_sidecars_writes_none(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "a", "model": FLUX, "input": {"prompt": "a"}}]
    )
    out = tmp_path / "out"
    await run_jobs(
        lambda: read_manifest(manifest), engine_config(emulator_server, out, sidecars=False)
    )
    assert [p.name for p in out.iterdir() if p.name.startswith("a.")]  # the output itself
    assert not list(Path(out).rglob("*.info.json"))


async def test_export_names_the_version_that_ran_and_keeps_input_an_object(
    emulator_server, tmp_path
):
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "a", "model": FLUX, "input": {"prompt": "a", "seed": 3}}]
    )
    out = tmp_path / "out"
    await run_jobs(lambda: read_manifest(manifest), engine_config(emulator_server, out))
    ran = json.loads((out / "a.info.json").read_text())["version"]

    args = ["export", str(manifest), "--output-dir", str(out), "--output"]
    assert main([*args, str(tmp_path / "e.jsonl")]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert row["version"] == ran  # the manifest named no version
    assert row["input"] == {"prompt": "a", "seed": 3}
    assert main([*args, str(tmp_path / "e.csv"), "--format", "csv"]) == 0
    with (tmp_path / "e.csv").open(newline="") as f:
        (line,) = list(csv.DictReader(f))
    assert json.loads(line["input"]) == {"prompt": "a", "seed": 3}
    assert line["version"] == ran
