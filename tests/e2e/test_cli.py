"""The command line as a user runs it: exit codes, messages, files, the journal."""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine import EngineConfig
from engine.cli import cli
from tests.e2e.helpers import (
    FLUX,
    assert_files_match_journal,
    cli_env,
    image_jobs,
    journal_records,
    write_jsonl,
)

ENGINE = [sys.executable, "-m", "engine"]
DIST = "replicate-batch-engine"


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


# The command line's surface: help, version, settings precedence, --only, pipes.

COMMANDS = ("run", "validate", "status", "export")


def test_every_flag_of_every_command_has_help_and_shows_its_default():
    for name in COMMANDS:
        command = cli.commands[name]
        for param in command.params:
            if param.param_type_name != "option" or param.name in ("help", "settings_file"):
                continue
            assert param.help, f"{name} {param.opts} has no help"
            assert param.show_default, f"{name} {param.opts} shows no default"


def test_each_help_names_the_program_shows_examples_exit_codes_and_engine_defaults(tmp_path):
    defaults = EngineConfig()
    for name in COMMANDS:
        result = run_cli(name, "--help", env=dict(os.environ), cwd=tmp_path)
        text = " ".join(result.stdout.split())
        assert result.returncode == 0
        assert f"Usage: python -m engine {name}" in text
        assert "Examples:" in text
        assert "Exit codes:" in text
        assert "Traceback" not in result.stderr
    run_help = " ".join(run_cli("run", "--help", env=dict(os.environ), cwd=tmp_path).stdout.split())
    assert f"REPLICATE_BATCH_CONCURRENCY; default: {defaults.concurrency}]" in run_help
    assert f"default: {defaults.create_rate:g}]" in run_help
    assert f"default: {defaults.read_rate:g}]" in run_help
    assert f"REPLICATE_BATCH_MAX_RETRIES; default: {defaults.prediction_retries}]" in run_help
    assert f"default: {defaults.poll_interval:g}]" in run_help
    assert "130" in run_help


def test_the_console_script_names_itself_and_reports_its_version(tmp_path):
    script = Path(sys.executable).parent / "replicate-batch"
    assert script.exists(), "the console script is not installed (pip install -e .)"

    helped = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    version = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=False, cwd=tmp_path
    )

    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: replicate-batch ")
    assert version.returncode == 0
    assert version.stdout.strip() == f"replicate-batch {importlib.metadata.version(DIST)}"


def test_shell_completion_answers_through_the_documented_variable(tmp_path):
    script = Path(sys.executable).parent / "replicate-batch"
    env = dict(os.environ, _REPLICATE_BATCH_COMPLETE="bash_complete")
    env.update(COMP_WORDS="replicate-batch run --max-pre", COMP_CWORD="2")

    result = subprocess.run(
        [str(script)], env=env, capture_output=True, text=True, check=False, cwd=tmp_path
    )

    assert result.returncode == 0
    assert "--max-predictions" in result.stdout
    assert "--max-predict-seconds" in result.stdout


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    cases = [
        ("run", str(manifest), "--concurency", "3"),
        ("run", str(manifest), "--concurrency", "zero"),
        ("run", str(manifest), "--concurrency", "0"),
        ("run",),
        ("launch", str(manifest)),
        ("export", str(manifest), "--format", "xml"),
    ]
    for args in cases:
        result = run_cli(*args, env=dict(os.environ), cwd=tmp_path)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("error: "), (args, result.stderr)
    assert not (tmp_path / "outputs").exists()


def created_with(emulator_server, tmp_path, name, *flags, env_extra=None, settings=None):
    """Run 6 jobs in a fresh output folder; return (exit code, predictions created)."""
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    env = cli_env(emulator_server)
    env.update(env_extra or {})
    if settings is not None:
        (tmp_path / f"{name}.yaml").write_text(settings)
        env["REPLICATE_BATCH_CONFIG"] = str(tmp_path / f"{name}.yaml")
    result = run_cli("run", str(manifest), "--output-dir", name, *flags, env=env, cwd=tmp_path)
    report = json.loads((tmp_path / name / "report.json").read_text())
    return result.returncode, report["predictions_created"]


def test_settings_precedence_is_flag_then_env_then_file_then_default(emulator_server, tmp_path):
    settings = "max-predictions: 4\npoll_interval: 0.02\n"
    env = {"REPLICATE_BATCH_MAX_PREDICTIONS": "3"}

    default = created_with(emulator_server, tmp_path, "default")
    from_file = created_with(emulator_server, tmp_path, "file", settings=settings)
    from_env = created_with(emulator_server, tmp_path, "env", settings=settings, env_extra=env)
    from_flag = created_with(
        emulator_server,
        tmp_path,
        "flag",
        "--max-predictions",
        "2",
        settings=settings,
        env_extra=env,
    )

    assert default == (0, 6)
    assert from_file == (3, 4)  # a budget stopped the run: exit 3
    assert from_env == (3, 3)
    assert from_flag == (3, 2)


def test_a_bad_setting_names_its_source_and_exits_2_before_any_call(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    (tmp_path / "bad.yaml").write_text("concurrency: -1\n")
    (tmp_path / "unknown.yaml").write_text("concurrencyy: 4\n")
    cases = [
        ({"REPLICATE_BATCH_CONCURRENCY": "many"}, (), "REPLICATE_BATCH_CONCURRENCY"),
        ({"REPLICATE_BATCH_RETRY_FAILED": "perhaps"}, (), "REPLICATE_BATCH_RETRY_FAILED"),
        ({}, ("--config", "bad.yaml"), "bad.yaml, concurrency"),
        ({"REPLICATE_BATCH_CONFIG": "unknown.yaml"}, (), "unknown setting 'concurrencyy'"),
        ({}, ("--config", "missing.yaml"), "missing.yaml"),
        ({"REPLICATE_BATCH_ATTEMPT_TIMEOUT": "0"}, (), "REPLICATE_BATCH_ATTEMPT_TIMEOUT"),
        ({"REPLICATE_BATCH_SHUTDOWN_GRACE": "-1"}, (), "REPLICATE_BATCH_SHUTDOWN_GRACE"),
    ]
    for extra, flags, named in cases:
        env = cli_env(emulator_server)
        env.update(extra)
        result = run_cli("run", str(manifest), *flags, env=env, cwd=tmp_path)
        assert result.returncode == 2, (extra, flags, result.stderr)
        assert named in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_only_is_repeatable_takes_comma_lists_and_leaves_the_manifest_alone(
    emulator_server, tmp_path
):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(6))

    result = run_cli(
        "run",
        "--only",
        "p0001",
        "--only",
        "p0003,p0004",
        str(manifest),
        "--output-dir",
        "out",
        env=cli_env(emulator_server),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    done = {r["k"] for r in journal_records(tmp_path / "out" / "journal.jsonl") if r["e"] == "done"}
    assert done == {"p0001", "p0003", "p0004"}
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3


def test_export_and_status_end_quietly_when_the_reader_goes_away(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    assert run_cli("run", str(manifest), env=env, cwd=tmp_path).returncode == 0

    for command in ("export", "status"):
        proc = subprocess.Popen(
            [*ENGINE, command, str(manifest)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.close()  # the reader is gone before the first row is written
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 141, stderr
        assert "Traceback" not in stderr
        assert "Error" not in stderr


def test_the_summary_gives_absolute_paths(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))

    result = run_cli("run", str(manifest), env=cli_env(emulator_server), cwd=tmp_path)

    out = (tmp_path / "outputs" / "m").resolve()
    assert f"outputs in {out}/ ; report in {out / 'report.json'}" in result.stdout


def test_a_retried_call_prints_one_readable_line_not_a_stamina_dump(emulator_server, tmp_path):
    emulator_server.emulator.update(file_5xx_rate=0.5)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(10))

    result = run_cli("run", str(manifest), env=cli_env(emulator_server), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    retries = [line for line in result.stderr.splitlines() if " retry " in line]
    assert retries, result.stderr
    for line in retries:
        assert re.search(r"WARNING job=p\d{4} retry \d+ in [\d.]+ s: ServerError\(", line), line
    assert "callable=" not in result.stderr
    assert "kwargs=" not in result.stderr


def test_the_readme_documents_every_command_and_flag():
    readme = (Path(__file__).parents[2] / "README.md").read_text()

    for name, command in cli.commands.items():
        assert f"`{name} " in readme, f"README does not document the {name} command"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt not in ("-h", "--help"):
                    assert f"`{opt}" in readme, f"README does not document {name} {opt}"
    assert "REPLICATE_BATCH_CONFIG" in readme
    assert "_REPLICATE_BATCH_COMPLETE" in readme


def test_the_emulator_keeps_its_own_flags_and_no_command_shows_the_help(tmp_path):
    emulator_help = run_cli("emulator", "--help", env=dict(os.environ), cwd=tmp_path)
    bare = run_cli(env=dict(os.environ), cwd=tmp_path)

    assert emulator_help.returncode == 0
    assert "--ca-file" in emulator_help.stdout
    assert "--port" in emulator_help.stdout
    assert bare.returncode == 2
    assert "Commands:" in bare.stderr
    assert "Traceback" not in bare.stderr


def test_validate_says_the_manifest_s_own_mistakes_without_a_token(tmp_path: Path) -> None:
    """A manifest's mistakes need no token, emulator or network: they come first."""
    (tmp_path / "bad.yaml").write_text("jobs:\n  - id: my job\n    model: a/b\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}

    for args in (("validate", "bad.yaml"), ("run", "bad.yaml", "--dry-run")):
        result = run_cli(*args, env=env, cwd=tmp_path)

        assert result.returncode == 2, result.stderr
        assert "bad.yaml:2: jobs[0].id: invalid id 'my job'" in result.stderr
        assert "token" not in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "outputs").exists()
