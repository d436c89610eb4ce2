"""A job can never plan a file the engine writes: refused before any API call, exit 2."""

from __future__ import annotations

import pytest

from jobs import ENGINE_FILES
from tests.e2e.helpers import FLUX, LLAMA, cli_env, write_jsonl
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
