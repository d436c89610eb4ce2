"""No command writes over the user's data or the engine's own files: an ``@file`` input where
a run writes, and ``export --output`` or ``gallery`` onto a file of the run, are refused
before anything is sent (exit 2, one line)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.helpers import FLUX, SDXL, cli_env, engine_cli, write_jsonl

PNG = b"\x89PNG\r\n\x1a\n user's own picture"


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], lines
    return lines[0]


def sdxl_job(key: str, image: str | list[str]) -> dict[str, object]:
    return {"id": key, "model": SDXL, "input": {"prompt": "x", "image": image}}


# --- @file inputs where the run writes ---------------------------------------------------


@pytest.mark.parametrize(
    ("file", "jobs", "line"),
    [
        # the user's case: the job's own output would replace its input
        ("in.png", [sdxl_job("in", "@in.png")], 1),
        # another job's namespace, later in the manifest, and the @file in a list
        ("b_1.png", [sdxl_job("a", ["@b_1.png"]), sdxl_job("b", "x")], 1),
        # a job's sidecar and a part file are in its namespace too
        ("b.info.json", [sdxl_job("b", "x"), sdxl_job("c", "@b.info.json")], 2),
        ("B.png.part", [sdxl_job("b", "x"), sdxl_job("c", "@B.png.part")], 2),
        # a job whose output template names a folder
        ("sub/x.png", [{**sdxl_job("c", "@sub/x.png"), "output": "sub/x"}], 1),
    ],
)
def test_an_at_file_in_a_jobs_output_namespace_is_refused(
    emulator_server, tmp_path, file, jobs, line
):
    (tmp_path / file).parent.mkdir(exist_ok=True)
    (tmp_path / file).write_bytes(PNG)
    write_jsonl(tmp_path / "m.jsonl", jobs)

    result = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--output-dir", ".")

    refused(result, f"m.jsonl:{line}: @file", "writes its outputs")
    assert (tmp_path / file).read_bytes() == PNG
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}
    assert not (tmp_path / "journal.jsonl").exists()


@pytest.mark.parametrize(
    ("file", "extra", "role"),
    [
        ("out/report.json", [], "the report"),
        ("out/journal.jsonl", [], "the journal"),
        ("out/journal.jsonl.lock", [], "the journal's lock"),
        ("out/index.html", [], "the gallery"),
        ("run.log", ["--log-file", "run.log"], "--log-file"),
        ("state.jsonl", ["--state", "state.jsonl"], "the journal"),
        ("out/report_1.json", [], "a name the engine keeps"),
        ("out/.manifest-checked.json", [], "the manifest check's stamp"),
        ("out/.manifest-checked.json.tmp", [], "a name the engine keeps"),
    ],
)
def test_an_at_file_that_is_one_of_the_engines_files_is_refused(
    emulator_server, tmp_path, file, extra, role
):
    (tmp_path / "out").mkdir()
    (tmp_path / file).write_bytes(PNG)
    write_jsonl(tmp_path / "m.jsonl", [sdxl_job("a", f"@{file}")])

    result = engine_cli(
        tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--output-dir", "out", *extra
    )

    refused(result, "m.jsonl:1: @file", role)
    assert (tmp_path / file).read_bytes() == PNG
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_an_at_file_elsewhere_in_the_output_folder_is_read_and_kept(emulator_server, tmp_path):
    (tmp_path / "photo.png").write_bytes(PNG)
    (tmp_path / "a").mkdir()  # a folder named like a job: only its namespace is the job's
    (tmp_path / "a" / "in.png").write_bytes(PNG)
    write_jsonl(tmp_path / "m.jsonl", [sdxl_job("a", "@photo.png"), sdxl_job("b", "@a/in.png")])

    result = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--output-dir", ".")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "photo.png").read_bytes() == PNG
    assert (tmp_path / "a" / "in.png").read_bytes() == PNG
    assert list(tmp_path.glob("a.*"))
    assert list(tmp_path.glob("b.*"))


# --- export --output and gallery ---------------------------------------------------------


@pytest.fixture
def finished_run(emulator_server, tmp_path) -> Path:
    write_jsonl(tmp_path / "m.jsonl", [{"id": "b0", "model": FLUX, "input": {"prompt": "x"}}])
    result = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl")
    assert result.returncode == 0, result.stderr
    return tmp_path / "outputs" / "m"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("outputs/m/report.json", "the report"),
        ("outputs/m/b0.png", "job 'b0'"),
        ("outputs/m/b0_1.webp", "job 'b0'"),  # not there yet: the job's namespace
        ("outputs/m/b0.info.json", "engine's own"),
        ("outputs/m/index.html", "the gallery"),
        ("outputs/m/journal.jsonl", "the journal"),
        ("outputs/m/journal.jsonl.lock", "the journal's lock"),
        ("m.jsonl", "the manifest"),
    ],
)
def test_export_output_onto_a_file_of_the_run_is_refused(
    emulator_server, finished_run, target, words
):
    folder = finished_run.parent.parent
    before = snapshot(folder)

    for fmt in ("jsonl", "csv"):
        result = engine_cli(
            folder,
            cli_env(emulator_server),
            "export",
            "m.jsonl",
            "--output",
            target,
            "--format",
            fmt,
        )
        refused(result, words)

    assert snapshot(folder) == before


def test_export_output_beside_the_run_is_written(emulator_server, finished_run):
    folder = finished_run.parent.parent

    result = engine_cli(
        folder, cli_env(emulator_server), "export", "m.jsonl", "--output", "files.jsonl"
    )

    assert result.returncode == 0, result.stderr
    assert '"job": "b0"' in (folder / "files.jsonl").read_text()


def test_gallery_never_writes_over_the_journal_or_the_manifest(emulator_server, finished_run):
    folder = finished_run.parent.parent
    journal = finished_run / "journal.jsonl"
    (finished_run / "index.html").unlink()
    journal.rename(finished_run / "index.html")  # the journal, where index.html goes
    before = snapshot(folder)

    result = engine_cli(
        folder, cli_env(emulator_server), "gallery", "m.jsonl", "--state", "outputs/m/index.html"
    )

    refused(result, "the journal", "the gallery")
    assert snapshot(folder) == before


def test_run_never_writes_its_gallery_over_its_manifest(emulator_server, tmp_path):
    (tmp_path / "out").mkdir()
    manifest = write_jsonl(
        tmp_path / "out" / "index.html", [{"id": "a", "model": FLUX, "input": {"prompt": "x"}}]
    )
    before = manifest.read_bytes()

    result = engine_cli(
        tmp_path, cli_env(emulator_server), "run", "out/index.html", "--output-dir", "out"
    )

    refused(result, "the manifest", "the gallery")
    assert manifest.read_bytes() == before
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_run_on_redis_refuses_an_at_file_in_a_jobs_names_before_reaching_redis(
    emulator_server, tmp_path
):
    (tmp_path / "in.png").write_bytes(PNG)
    write_jsonl(tmp_path / "m.jsonl", [sdxl_job("in", "@in.png")])
    args = ("run", "m.jsonl", "--output-dir", ".", "--redis", "redis://127.0.0.1:1/0")

    result = engine_cli(tmp_path, cli_env(emulator_server), *args, "--run", "night")

    refused(result, "m.jsonl:1: @file", "writes its outputs")
    assert (tmp_path / "in.png").read_bytes() == PNG
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


@pytest.mark.parametrize(
    ("read", "write"),
    [(("--config", "s.yaml"), "--log-file"), (("--prices", "s.yaml"), "--json-logs")],
)
def test_no_log_is_written_over_the_settings_or_the_price_table(
    emulator_server, tmp_path, read, write
):
    write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "model": FLUX, "input": {"prompt": "x"}}])
    (tmp_path / "s.yaml").write_text("concurrency: 2\n")

    result = engine_cli(
        tmp_path, cli_env(emulator_server), "run", "m.jsonl", *read, write, "s.yaml"
    )

    refused(result, read[0], write, "the same file")
    assert (tmp_path / "s.yaml").read_text() == "concurrency: 2\n"
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}
