"""A job can never plan a file the engine writes: refused before any API call, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import ENGINE_FILES
from tests.e2e.helpers import FLUX, LLAMA, cli_env, journal_records, write_jsonl
from tests.e2e.test_cli import run_cli


@pytest.mark.parametrize(
    ("job_id", "model", "engine_file"),
    [
        ("journal", FLUX, ENGINE_FILES.journal),
        ("Journal", FLUX, ENGINE_FILES.journal),  # a case-insensitive file system
        ("report", LLAMA, ENGINE_FILES.report),
        ("index", FLUX, ENGINE_FILES.gallery),
        (".manifest-checked", LLAMA, ENGINE_FILES.stamp),
    ],
)
def test_an_output_named_like_an_engine_file_is_refused_before_any_call(
    emulator_server, tmp_path, job_id, model, engine_file
):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "fine", "model": FLUX, "input": {"prompt": "a"}},
            {"id": job_id, "model": model, "input": {"prompt": "b"}},
        ],
    )

    result = run_cli(
        "run", str(manifest), "--output-dir", "out", env=cli_env(emulator_server), cwd=tmp_path
    )

    assert result.returncode == 2, result.stderr
    assert engine_file in result.stderr
    assert "m.jsonl:2" in result.stderr
    assert "Traceback" not in result.stderr
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}
    assert not (tmp_path / "out" / ENGINE_FILES.journal).exists()


def test_an_output_named_like_another_jobs_sidecar_is_refused(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "a", "model": FLUX, "input": {"prompt": "a"}},
            {"id": "b", "model": FLUX, "input": {"prompt": "b"}, "output": "a.info"},
        ],
    )

    result = run_cli(
        "run", str(manifest), "--output-dir", "out", env=cli_env(emulator_server), cwd=tmp_path
    )

    assert result.returncode == 2, result.stderr
    assert "line 1" in result.stderr
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_the_engines_temporaries_stay_inside_its_reserved_names(emulator_server, tmp_path):
    # ".report" is a valid output stem, so ".report.json.tmp" is a name its job owns: the
    # report's temporary must not be that name (it is "report.json.<pid>.tmp").
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / ".report.json.tmp").symlink_to(victim)
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": ".report", "model": LLAMA, "input": {"prompt": "hi"}}]
    )

    result = run_cli(
        "run", str(manifest), "--output-dir", "out", env=cli_env(emulator_server), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious"
    assert (out / ENGINE_FILES.report).is_file()
    assert (out / ".report.txt").is_file()
    assert [p.name for p in out.glob("*.tmp")] == [".report.json.tmp"]  # only the planted one


def test_after_a_run_the_folder_holds_the_jobs_files_and_the_engines_own_only(
    emulator_server, tmp_path
):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "img", "model": FLUX, "input": {"prompt": "a", "num_outputs": 2}},
            {"id": "txt", "model": LLAMA, "input": {"prompt": "b"}},
        ],
    )
    env = cli_env(emulator_server)
    out = tmp_path / "out"

    first = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)
    again = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)

    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    journaled = {r["n"] for r in journal_records(out / ENGINE_FILES.journal) if r["e"] == "file"}
    sidecars = {ENGINE_FILES.sidecar(key) for key in ("img", "txt")}
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert len(journaled) == 3
    assert present == journaled | sidecars | set(ENGINE_FILES.at_root)
    # The lock is kept (and did not stop the second run): it names the last holder.
    assert json.loads((out / ENGINE_FILES.lock).read_text())["pid"] > 0


def test_the_readme_names_every_file_the_engine_keeps_in_the_output_folder():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    part = readme.split("### What is in the output folder", 1)[1].split("\n## ", 1)[0]

    for name in ENGINE_FILES.at_root:
        assert f"| `{name}` |" in part, name
    assert "kept on purpose" in part


def test_no_log_or_job_file_can_take_the_journal_s_lock(emulator_server, tmp_path):
    env = cli_env(emulator_server)
    plain = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "a", "model": FLUX, "input": {"prompt": "a"}}]
    )
    foldered = write_jsonl(
        tmp_path / "f.jsonl",
        [{"id": "a", "model": FLUX, "input": {"prompt": "a"}, "output": "state.jsonl.lock/a"}],
    )
    cases = [
        (plain, ("--log-file", f"out/{ENGINE_FILES.lock}"), "the journal's lock and --log-file"),
        (plain, ("--state", "out/s.jsonl", "--json-logs", "out/s.jsonl.lock"), "--json-logs"),
        (foldered, ("--state", "out/state.jsonl"), "the journal's lock out/state.jsonl.lock"),
    ]
    for manifest, flags, named in cases:
        result = run_cli("run", str(manifest), "--output-dir", "out", *flags, env=env, cwd=tmp_path)

        assert result.returncode == 2, (flags, result.stderr)
        assert named in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}
