"""The command line as a user runs it: exit codes, messages, files, the journal."""

from __future__ import annotations

import csv
import io
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.helpers import (
    FLUX,
    assert_files_match_journal,
    cli_env,
    image_jobs,
    journal_records,
    write_jsonl,
)

ENGINE = [sys.executable, "-m", "engine"]


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_malformed_manifest_exits_2_naming_file_and_line_without_calling_the_api(
    emulator_server, tmp_path
):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "jobs:\n"
        "  - model: black-forest-labs/flux-schnell\n"
        "    input: {prompt: a}\n"
        "  - model: not a model\n"
        "    input: {}\n"
    )

    result = run_cli("run", str(manifest), env=cli_env(emulator_server), cwd=tmp_path)

    assert result.returncode == 2
    assert "bad.yaml:4" in result.stderr
    assert "model" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_a_missing_token_exits_2_naming_the_variables(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    env = cli_env(emulator_server)
    del env["REPLICATE_API_TOKEN"]

    result = run_cli("run", str(manifest), env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "REPLICATE_API_TOKEN" in result.stderr
    assert "REPLICATE_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_wrong_token_exits_2_and_never_prints_the_token(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    env["REPLICATE_API_TOKEN"] = "r8_wrong_secret_value_123"

    result = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "401" in result.stderr or "Unauthenticated" in result.stderr
    everything = (
        result.stderr + result.stdout + "".join(p.read_text() for p in (tmp_path / "out").glob("*"))
    )
    assert "r8_wrong_secret_value_123" not in everything
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


def test_run_then_status_then_export(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(4))
    env = cli_env(emulator_server)

    ran = run_cli(
        "run",
        str(manifest),
        "--output-dir",
        "out",
        "--poll-interval",
        "0.02",
        env=env,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert assert_files_match_journal(tmp_path / "out", tmp_path / "out" / "journal.jsonl") == 4
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["done"], report["exit_code"]) == (4, 0)

    status = run_cli(
        "status", str(manifest), "--output-dir", "out", "--json", env=env, cwd=tmp_path
    )
    assert status.returncode == 0
    assert json.loads(status.stdout)["by_status"]["done"] == 4

    exported = run_cli(
        "export", str(manifest), "--output-dir", "out", "--format", "csv", env=env, cwd=tmp_path
    )
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["job"] for r in rows] == ["p0000", "p0001", "p0002", "p0003"]
    assert all(len(r["sha256"]) == 64 and r["prediction_id"] for r in rows)


def test_killed_at_random_moments_then_resumed_loses_nothing_and_pays_once(
    emulator_server, tmp_path
):
    emulator_server.emulator.update(cut_first_downloads=1)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(40, model=FLUX))
    env = cli_env(emulator_server)
    args = [
        *ENGINE,
        "run",
        str(manifest),
        "--output-dir",
        "out",
        "--concurrency",
        "8",
        "--poll-interval",
        "0.02",
    ]
    rng = random.Random(7)
    journal = tmp_path / "out" / "journal.jsonl"
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        target = rng.randint(5, 60)
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= target + 20 * kills:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    final = run_cli(*args[3:], env=env, cwd=tmp_path)

    assert final.returncode == 0, final.stderr
    assert kills >= 1
    assert assert_files_match_journal(tmp_path / "out", journal) == 40
    done = {r["k"] for r in journal_records(journal) if r["e"] == "done"}
    assert len(done) == 40
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["duplicates"] == {}, "a job was paid for twice"
    assert stats["predictions_created"] == 40


def test_a_missing_ca_bundle_exits_2_with_a_clear_message(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    env = cli_env(emulator_server)
    env["SSL_CERT_FILE"] = str(tmp_path / "nowhere.pem")

    result = run_cli("run", str(manifest), env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "SSL_CERT_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_each_schema_violation_with_its_line_and_creates_nothing(
    emulator_server, tmp_path
):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "ok", "model": FLUX, "input": {"prompt": "fine"}},
            {"id": "range", "model": FLUX, "input": {"prompt": "x", "num_outputs": 9}},
            {"id": "type", "model": FLUX, "input": {"prompt": 3}},
            {"id": "missing", "model": FLUX, "input": {"num_outputs": 1}},
            {"id": "unknown", "model": FLUX, "input": {"prompt": "x", "colour": "red"}},
            {"id": "enum", "model": FLUX, "input": {"prompt": "x", "output_format": "gif"}},
        ],
    )

    result = run_cli("validate", str(manifest), env=cli_env(emulator_server), cwd=tmp_path)

    assert result.returncode == 2
    expected = (
        (2, "num_outputs"),
        (3, "prompt"),
        (4, "prompt"),
        (5, "colour"),
        (6, "output_format"),
    )
    for line, field in expected:
        assert f"m.jsonl:{line}: input.{field}" in result.stderr
    assert "m.jsonl:1" not in result.stderr
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


def test_an_edited_manifest_is_checked_again_before_any_call(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    first = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    requests_before = sum(emulator_server.emulator.stats.snapshot()["requests"].values())
    with manifest.open("a") as f:
        f.write('{"id": "late", "model": "nope"}\n')

    second = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)

    assert second.returncode == 2
    assert "m.jsonl:3" in second.stderr
    assert sum(emulator_server.emulator.stats.snapshot()["requests"].values()) == requests_before
