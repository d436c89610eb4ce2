"""Every run setting honours its flag, environment variable and settings file alike; a
variable no setting reads is said, never ignored in silence; --only takes no empty id."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.helpers import FLUX, cli_env, engine_cli, write_jsonl


def job(key: str, prompt: str) -> dict[str, object]:
    return {"id": key, "model": FLUX, "input": {"prompt": prompt}}


def created(server) -> int:
    return server.emulator.stats.snapshot()["predictions_created"]


def one_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("source", ["env", "file", "flag"])
def test_on_changed_report_is_honoured_from_every_source(emulator_server, tmp_path, source):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox")])
    env = cli_env(emulator_server)
    assert engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out").returncode == 0
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a wolf")])
    [output] = (tmp_path / "out").glob("a.*[!n]")  # a.webp or a.png; not a.info.json
    before = output.read_bytes()
    extra: list[str] = []
    if source == "env":
        env = env | {"REPLICATE_BATCH_ON_CHANGED": "report"}
    elif source == "file":
        (tmp_path / "s.yaml").write_text("on-changed: report\n")
        extra = ["--config", "s.yaml"]
    else:
        extra = ["--on-changed", "report"]

    again = engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out", *extra)

    assert again.returncode == 1, again.stderr
    assert created(emulator_server) == 1  # reported, not run again
    assert output.read_bytes() == before


@pytest.mark.parametrize(
    ("env", "extra", "source"),
    [
        (
            {"REPLICATE_BATCH_ON_CHANGED": "x"},
            [],
            "environment variable REPLICATE_BATCH_ON_CHANGED",
        ),
        ({}, ["--config", "s.yaml"], "settings file s.yaml, on-changed"),
        ({}, ["--on-changed", "x"], "--on-changed"),
    ],
)
def test_a_bad_on_changed_is_refused_naming_its_source(
    emulator_server, tmp_path, env, extra, source
):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox")])
    (tmp_path / "s.yaml").write_text("on-changed: x\n")

    result = engine_cli(tmp_path, cli_env(emulator_server) | env, "run", "m.jsonl", *extra)

    one_error(result, source, "'x' is not 'rerun' or 'report'")
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("REPLICATE_BATCH_OUTPUT_DIR", "--output-dir is set by its flag only"),
        ("REPLICATE_BATCH_CONCURENCY", "did you mean REPLICATE_BATCH_CONCURRENCY?"),
    ],
)
def test_a_variable_no_setting_reads_is_said(emulator_server, tmp_path, name, words):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox")])
    env = cli_env(emulator_server) | {name: "elsewhere"}

    result = engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out", "-q")

    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: environment variable {name} is ignored: ")
    assert words in warning
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("value", ["", " ", "a,", ",", "a,,b"])
def test_only_with_an_empty_id_is_refused(emulator_server, tmp_path, value):
    write_jsonl(tmp_path / "m.jsonl", [job("a", "a fox"), job("b", "a hen")])

    result = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--only", value)

    one_error(result, "--only", "empty id")
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_only_suggests_an_id_that_differs_in_case(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", [job("p0", "a fox"), job("q1", "a hen")])

    result = engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--only", "P0")

    one_error(result, "'P0' (did you mean 'p0'?)")
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}
