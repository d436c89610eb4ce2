"""Billable units per model from what the API reports; money only from the user's prices."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from typing import Any

import httpx
import pytest

from engine import ConfigError, read_manifest, run_jobs
from engine._pricing import PriceTable, load_prices
from tests.e2e.helpers import (
    FAILS,
    FLUX,
    LLAMA,
    SDXL,
    cli_env,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)

WHY = "(no price, or no earlier timing)"
PRICES = """\
models:
  black-forest-labs/flux-schnell: {output: 0.003}
hardware:
  gpu-a100-large: 0.0014
"""


def predictions(server: Any, journal) -> dict[str, dict[str, Any]]:
    """GET every prediction the run created, by id, from the emulator."""
    ids = {r["p"] for r in journal_records(journal) if r["e"] == "created"}
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with httpx.Client(verify=context) as client:
        return {
            pid: client.get(
                f"{server.base_url}/v1/predictions/{pid}",
                headers={"Authorization": f"Bearer {server.token}"},
            ).json()
            for pid in ids
        }


@pytest.mark.anyio
async def test_spend_is_the_price_table_times_what_the_emulator_reports(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "f1", "model": FLUX, "input": {"prompt": "a"}},
            {"id": "f2", "model": FLUX, "input": {"prompt": "b", "num_outputs": 2}},
            {"id": "f3", "model": FLUX, "input": {"prompt": "c"}},
            {"id": "s1", "model": SDXL, "input": {"prompt": "d"}},
            {"id": "s2", "model": SDXL, "input": {"prompt": "e"}},
            {"id": "l1", "model": LLAMA, "input": {"prompt": "a haiku"}},
            {"id": "x1", "model": FAILS, "input": {"prompt": "fails"}},
        ],
    )
    (tmp_path / "prices.yaml").write_text(PRICES)
    prices = load_prices(tmp_path / "prices.yaml")
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, prices=prices, prediction_retries=0)
    await run_jobs(lambda: read_manifest(manifest), config)

    remote = predictions(emulator_server, config.journal_path)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for p in remote.values():
        by_model.setdefault(p["model"], []).append(p)
    images = sum(p["metrics"]["image_count"] for p in by_model[FLUX])
    assert images == 4
    sdxl_seconds = sum(p["metrics"]["predict_time"] for p in by_model[SDXL])
    assert {p["hardware"] for p in by_model[SDXL]} == {"gpu-a100-large"}
    (llama,) = by_model[LLAMA]

    billing = json.loads((out / "report.json").read_text())["billing"]
    lines = {(line["model"], line["unit"]): line for line in billing["lines"]}
    assert set(lines) == {
        (FLUX, "output"),
        (SDXL, "second"),
        (LLAMA, "input_token"),
        (LLAMA, "output_token"),
    }  # the failed prediction of a public model is not billed
    assert lines[FLUX, "output"]["amount"] == images
    assert lines[FLUX, "output"]["hardware"] is None
    assert lines[SDXL, "second"]["amount"] == pytest.approx(sdxl_seconds)
    assert lines[SDXL, "second"]["hardware"] == "gpu-a100-large"
    assert lines[LLAMA, "output_token"]["amount"] == llama["metrics"]["output_token_count"]
    assert lines[LLAMA, "output_token"]["cost"] is None  # no price given: none claimed
    assert billing["unpriced_lines"] == 2
    assert billing["priced_cost"] == pytest.approx(images * 0.003 + sdxl_seconds * 0.0014)


@pytest.mark.anyio
async def test_max_spend_stops_creating_at_the_limit(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(10))
    prices = PriceTable(models={FLUX: {"output": 1.0}})
    config = engine_config(
        emulator_server, tmp_path / "out", prices=prices, max_spend=2.5, concurrency=1
    )
    summary = await run_jobs(lambda: read_manifest(manifest), config)
    assert summary.stopped_reason == "max-spend reached"
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3
    assert summary.billing is not None
    assert summary.billing["priced_cost"] == 3.0
    assert summary.exit_code == 3


def test_the_summary_shows_units_and_money_and_max_spend_needs_prices(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "f", "model": FLUX, "input": {"prompt": "a", "num_outputs": 2}},
            {"id": "s", "model": SDXL, "input": {"prompt": "b"}},
        ],
    )
    (tmp_path / "prices.yaml").write_text(
        "models:\n  black-forest-labs/flux-schnell: {output: 0.5}\n"
    )
    base = [
        sys.executable,
        "-m",
        "engine",
        "run",
        str(manifest),
        "--output-dir",
        str(tmp_path / "o"),
    ]
    env = cli_env(emulator_server) | {"COLUMNS": "200"}
    refused = subprocess.run(
        [*base, "--max-spend", "1"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "--max-spend needs --prices FILE" in refused.stderr

    run = subprocess.run(
        [*base, "--prices", str(tmp_path / "prices.yaml")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 outputs (billed per output) = 1.0000 USD" in run.stdout
    assert "s predict time on gpu-a100-large (no price)" in run.stdout
    assert "1.0000 USD + 1 line without a price" in run.stdout
    assert (tmp_path / "o" / "index.html").exists()  # every run writes its gallery


def test_a_bad_price_table_says_what_is_wrong(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("models:\n  a/b: {per_image: 1}\n")
    with pytest.raises(ConfigError, match="unknown unit 'per_image'"):
        load_prices(path)
    path.write_text("hardware:\n  gpu-t4: -1\n")
    with pytest.raises(ConfigError, match=r"hardware.gpu-t4: expected a price >= 0"):
        load_prices(path)


def test_dry_run_estimates_from_outputs_and_earlier_timings_only(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "f1", "model": FLUX, "input": {"prompt": "a", "num_outputs": 2}},
            {"id": "f2", "model": FLUX, "input": {"prompt": "b"}},  # the schema's default: 1
            {"id": "s1", "model": SDXL, "input": {"prompt": "c"}},
            {"id": "s2", "model": SDXL, "input": {"prompt": "d"}},
            {"id": "s3", "model": SDXL, "input": {"prompt": "e"}},
            {"id": "l1", "model": LLAMA, "input": {"prompt": "f"}},
        ],
    )
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n"
        "  black-forest-labs/flux-schnell: {output: 0.5}\n"
        "  stability-ai/sdxl: {second: 10}\n"
    )
    env = cli_env(emulator_server)
    out = tmp_path / "o"
    base = [sys.executable, "-m", "engine"]

    def dry_run() -> list[str]:
        result = subprocess.run(
            [
                *base,
                "run",
                str(manifest),
                "--output-dir",
                str(out),
                "--dry-run",
                "--prices",
                str(prices),
            ],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return [
            line
            for line in result.stdout.splitlines()
            if line.startswith(("estimated cost", "  not estimated"))
        ]

    # Nothing has run: sdxl is priced by the second but no timing is known yet.
    assert dry_run() == [
        "estimated cost: 1.5000 USD for 2 pending jobs",
        f"  not estimated: 1 job of {LLAMA} {WHY}",
        f"  not estimated: 3 jobs of {SDXL} {WHY}",
    ]
    ran = subprocess.run(
        [*base, "run", str(manifest), "--output-dir", str(out), "--only", "s1", "--no-gallery"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert not (out / "index.html").exists()
    remote = predictions(emulator_server, out / "journal.jsonl")
    (s1,) = remote.values()
    expected = 1.5 + 2 * 10 * s1["metrics"]["predict_time"]
    assert dry_run() == [
        f"estimated cost: {expected:.4f} USD for 4 pending jobs",
        f"  not estimated: 1 job of {LLAMA} {WHY}",
    ]
    assert (
        emulator_server.emulator.stats.snapshot()["predictions_created"] == 1
    )  # dry runs pay nothing
