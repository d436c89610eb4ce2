"""A job whose model or input changed after it was done is re-run (old files kept) or reported."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.helpers import FLUX, SDXL, cli_env, journal_records, write_jsonl
from tests.e2e.test_cli import run_cli
from tests.support import sha256_of


def job(job_id: str, prompt: str, model: str = FLUX) -> dict[str, object]:
    return {"id": job_id, "model": model, "input": {"prompt": prompt}}


def run(tmp_path: Path, server, manifest: str = "m.jsonl", *extra: str):
    return run_cli(
        "run", manifest, "--output-dir", "out", *extra, env=cli_env(server), cwd=tmp_path
    )


def created(server) -> int:
    return server.emulator.stats.snapshot()["predictions_created"]


def files(out: Path) -> dict[str, dict[str, object]]:
    return {r["n"]: r for r in journal_records(out / "journal.jsonl") if r["e"] == "file"}


def test_an_edited_input_is_rerun_and_the_old_file_kept_aside(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox"), job("b", "a hen")])
    assert run(tmp_path, emulator_server).returncode == 0
    out = tmp_path / "out"
    [(old_name, old)] = [(n, r) for n, r in files(out).items() if n.startswith("a.")]
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a wolf"), job("b", "a hen")])

    again = run(tmp_path, emulator_server)

    assert again.returncode == 0, again.stderr
    assert created(emulator_server) == 3  # only the edited job paid again
    ext = old_name.rsplit(".", 1)[1]
    kept = out / f"a.before-{old['p']}.{ext}"
    assert sha256_of(kept) == old["sha"]  # the old file, not silently replaced
    new = files(out)[old_name]
    assert new["p"] != old["p"]
    assert sha256_of(out / old_name) == new["sha"] != old["sha"]
    report = json.loads((out / "report.json").read_text())
    assert (report["changed_keys"], report["stale_keys"]) == (["a"], [])
    assert "job.changed" in again.stdout + again.stderr
    exported = run_cli(
        "export", "m.jsonl", "--output-dir", "out", env=cli_env(emulator_server), cwd=tmp_path
    )
    [row] = [json.loads(line) for line in exported.stdout.splitlines() if '"a"' in line]
    assert row["file"] == old_name
    assert row["sha256"] == new["sha"]


def test_an_edited_model_is_rerun(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox")])
    assert run(tmp_path, emulator_server).returncode == 0
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox", SDXL)])

    again = run(tmp_path, emulator_server)

    assert again.returncode == 0, again.stderr
    assert created(emulator_server) == 2
    assert list((tmp_path / "out").glob("a.before-*"))


def test_report_only_leaves_the_files_and_exits_1(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox"), job("b", "a hen")])
    assert run(tmp_path, emulator_server).returncode == 0
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith(("a.", "b."))}
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a wolf"), job("b", "a hen")])

    again = run(tmp_path, emulator_server, "m.jsonl", "--on-changed", "report")

    assert again.returncode == 1, again.stderr
    assert created(emulator_server) == 2
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith(("a.", "b."))}
    assert after == before
    report = json.loads((out / "report.json").read_text())
    assert (report["changed_keys"], report["stale_keys"]) == ([], ["a"])


def test_unchanged_jobs_and_old_journals_make_no_call(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox")])
    assert run(tmp_path, emulator_server).returncode == 0
    journal = tmp_path / "out" / "journal.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert any("jk" in r for r in lines)
    assert run(tmp_path, emulator_server).returncode == 0
    # A journal written before the content field: nothing to compare, nothing re-run.
    journal.write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k not in ("jk", "m")}) + "\n" for r in lines
        )
    )
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a wolf")])

    old = run(tmp_path, emulator_server)

    assert old.returncode == 0, old.stderr
    assert created(emulator_server) == 1


def test_a_journal_of_another_manifest_reruns_exactly_the_jobs_that_differ(
    emulator_server, tmp_path
):
    write_jsonl(tmp_path / "one.jsonl", [job("x", "same"), job("y", "one's")])
    state = tmp_path / "shared.jsonl"
    first = run(tmp_path, emulator_server, "one.jsonl", "--state", str(state))
    assert first.returncode == 0, first.stderr
    write_jsonl(tmp_path / "two.jsonl", [job("x", "same"), job("y", "two's"), job("z", "new")])

    second = run(tmp_path, emulator_server, "two.jsonl", "--state", str(state))

    assert second.returncode == 0, second.stderr
    assert created(emulator_server) == 4  # y again, z new; x is the very same job
    assert "journal.other_manifest" in second.stdout + second.stderr
    assert "one.jsonl" in second.stdout + second.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["changed_keys"] == ["y"]
