"""A manifest that never ran: the commands that read its journal agree, and none fails.

``status`` counts every job pending, ``export`` writes no row, ``gallery`` says there is
nothing to show and ``cancel`` that nothing runs: all exit 0, make no folder and send
nothing. A name that is no manifest at all is an error (exit 2) for each of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.helpers import cli_env, image_jobs, write_jsonl
from tests.e2e.test_cli import run_cli


def test_every_inspect_command_agrees_that_nothing_has_run(emulator_server, tmp_path: Path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    journal = tmp_path / "outputs" / "m" / "journal.jsonl"

    status = run_cli("status", "m.jsonl", env=env, cwd=tmp_path)
    as_json = run_cli("status", "m.jsonl", "--json", env=env, cwd=tmp_path)
    export = run_cli("export", "m.jsonl", "--format", "csv", env=env, cwd=tmp_path)
    gallery = run_cli("gallery", "m.jsonl", env=env, cwd=tmp_path)
    cancel = run_cli("cancel", "m.jsonl", env=env, cwd=tmp_path)

    for result in (status, as_json, export, gallery, cancel):
        assert result.returncode == 0, (result.args, result.stderr)
        assert "Traceback" not in result.stderr
    assert f"journal: none yet at {journal} (nothing has run)" in status.stdout
    assert "pending: 3" in status.stdout
    report = json.loads(as_json.stdout)
    assert (report["jobs"], report["by_status"]["pending"], report["runs"]) == (3, 3, 0)
    assert export.stdout == ""
    assert export.stderr == f"exported 0 files; nothing has run yet (no journal at {journal})\n"
    assert gallery.stderr.startswith("gallery: not written, nothing has run yet")
    assert cancel.stderr == f"nothing is running: nothing has run yet (no journal at {journal})\n"
    assert not (tmp_path / "outputs").exists()
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_a_name_that_is_no_manifest_is_an_error_for_each_of_them(emulator_server, tmp_path):
    env = cli_env(emulator_server)

    for command in ("status", "export", "gallery", "cancel"):
        result = run_cli(command, "mistyped.yaml", env=env, cwd=tmp_path)

        assert result.returncode == 2, (command, result.stderr)
        assert (
            result.stderr == "error: mistyped.yaml: cannot read the manifest: it does not exist\n"
        )
    assert not (tmp_path / "outputs").exists()
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_status_lists_jobs_not_run_yet_as_pending_without_failing(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    ran = run_cli("run", "m.jsonl", "--only", "p0001", env=env, cwd=tmp_path)

    status = run_cli("status", "m.jsonl", "--json", env=env, cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert status.returncode == 0, status.stderr
    by_status = json.loads(status.stdout)["by_status"]
    assert (by_status["done"], by_status["pending"]) == (1, 2)
