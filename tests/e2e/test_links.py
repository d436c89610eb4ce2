"""Every failure a person reads links to its prediction's page on replicate.com."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.helpers import FAILS, cli_env, image_jobs, journal_records, write_jsonl

ENGINE = [sys.executable, "-m", "engine"]


def test_summary_status_and_json_logs_give_each_prediction_its_web_link(emulator_server, tmp_path):
    jobs = [*image_jobs(2), {"id": "bad", "model": FAILS, "input": {"prompt": "x"}}]
    write_jsonl(tmp_path / "m.jsonl", jobs)
    env = cli_env(emulator_server)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ENGINE, *args], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
        )

    run = cli(
        "run", "m.jsonl", "--output-dir", "out", "--max-retries", "0", "--json-logs", "e.jsonl"
    )

    assert run.returncode == 1, run.stderr
    records = journal_records(tmp_path / "out" / "journal.jsonl")
    bad = next(r["p"] for r in records if r["e"] == "failed" and r["k"] == "bad")
    link = f"https://replicate.com/p/{bad}"
    assert f"  bad  {link}" in run.stdout.splitlines()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["failed_links"] == {"bad": link}
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "job.failed"]
    assert failed
    assert all(e["url"] == link for e in failed)
    done = [e for e in events if e["event"] == "job.done"]
    assert len(done) == 2
    assert all(e["url"] == f"https://replicate.com/p/{e['prediction_id']}" for e in done)

    text = cli("status", "m.jsonl", "--output-dir", "out")
    as_json = cli("status", "m.jsonl", "--output-dir", "out", "--json")

    assert f"      {link}" in text.stdout.splitlines()
    assert json.loads(as_json.stdout)["failed"]["bad"]["url"] == link
