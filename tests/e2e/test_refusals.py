"""Bad configuration is refused before anything is paid: one line, exit 2, no traceback."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from engine import ApiConfig, ConfigError, Secret
from tests.e2e.helpers import ENGINE, cli_env, engine_cli, image_jobs, write_jsonl


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word.lower() in lines[0].lower(), lines
    return lines[0]


def assert_nothing_paid(server) -> None:
    stats = server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 0
    assert stats["requests"] == {}


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://127.0.0.1:99999", ("port",)),
        ("https://127.0.0.1:-1", ("port",)),
        ("http://api.replicate.com", ("https",)),
        ("ftp://127.0.0.1", ("https",)),
        ("https://", ("host",)),
        ("https://user:pw@127.0.0.1", ("credentials",)),
    ],
)
def test_a_base_url_that_cannot_be_used_is_refused(emulator_server, tmp_path, url, words):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server) | {"REPLICATE_BASE_URL": url}

    line = assert_refused(engine_cli(tmp_path, env, "run", "m.jsonl"), "REPLICATE_BASE_URL", *words)

    assert "pw" not in line
    assert_nothing_paid(emulator_server)


def test_plain_http_is_allowed_to_this_machine_only() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:8080"):
        assert ApiConfig(base_url=url).base_url == url
    with pytest.raises(ConfigError, match="https"):
        ApiConfig(base_url="http://10.0.0.1:8080")


def test_a_token_with_surrounding_whitespace_is_stripped(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    env["REPLICATE_API_TOKEN"] = f"  {env['REPLICATE_API_TOKEN']}\n"

    result = engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out")

    assert result.returncode == 0, result.stderr
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 2


@pytest.mark.parametrize("token", ["r8_abc def", "r8_abc\ndef", "r8_tok\x00en", "r8_tökén"])
def test_a_token_that_cannot_be_a_header_is_refused_unsaid(emulator_server, tmp_path, token):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    env = cli_env(emulator_server) | {"REPLICATE_API_TOKEN": token.replace("\x00", "\x01")}

    line = assert_refused(engine_cli(tmp_path, env, "run", "m.jsonl"), "token")

    assert "abc" not in line
    assert "tok" not in line.replace("token", "")
    assert_nothing_paid(emulator_server)


def test_a_token_with_whitespace_is_refused_by_the_library_too() -> None:
    with pytest.raises(ConfigError, match="token"):
        ApiConfig(token=Secret("r8_a b"))


def make_paths(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    os.link(tmp_path / "m.jsonl", tmp_path / "hardlink.jsonl")
    (tmp_path / "symlink.jsonl").symlink_to(tmp_path / "m.jsonl")
    os.mkfifo(tmp_path / "fifo")


RUN_CASES = [
    (["--state", "adir"], ("--state", "is a directory")),  # click's words
    (["--state", "missing/j.jsonl"], ("--state", "does not exist")),
    (["--state", "afile/j.jsonl"], ("--state", "not a folder")),
    (["--state", "fifo"], ("--state", "not a regular file")),
    (["--json-logs", "adir"], ("--json-logs", "is a directory")),
    (["--log-file", "adir"], ("--log-file", "is a directory")),
    (["--log-file", "missing/run.log"], ("--log-file", "does not exist")),
    (["--log-file", "fifo"], ("--log-file", "not a regular file")),
    (["--json-logs", "missing/log.jsonl"], ("--json-logs", "does not exist")),
    (["--output-dir", "afile"], ("--output-dir", "'afile' is a file")),
    (["--output-dir", "afile/out"], ("afile is a file",)),
    (["--state", "m.jsonl"], ("the manifest and --state are the same file",)),
    (["--state", "hardlink.jsonl"], ("the manifest and --state",)),
    (["--json-logs", "symlink.jsonl"], ("the manifest and --json-logs",)),
    (["--log-file", "hardlink.jsonl"], ("the manifest and --log-file",)),
    (["--log-file", "l.log", "--json-logs", "l.log"], ("--log-file and --json-logs",)),
    (["--state", "j.jsonl", "--json-logs", "j.jsonl"], ("--state and --json-logs",)),
    (["--json-logs", "out/report.json"], ("--json-logs and the report",)),
    (["--json-logs", "out/journal.jsonl"], ("--state and --json-logs",)),
    (["--state", "adir", "--dry-run"], ("--state", "is a directory")),
    (["--state", "out/p0001.jsonl"], ("--state", "outputs of job 'p0001'")),
    (["--json-logs", "out/p0000_1.log"], ("--json-logs", "outputs of job 'p0000'")),
    (["--json-logs", "out/P0001.LOG"], ("--json-logs", "outputs of job 'p0001'")),
    (["--json-logs", "out/p0000/log.jsonl"], ("--json-logs", "outputs of job 'p0000'")),
    (["--json-logs", "out/index.html"], ("--json-logs", "engine's own")),
    (["--log-file", "out/p0000_1.log"], ("--log-file", "outputs of job 'p0000'")),
]


@pytest.mark.parametrize(("flags", "words"), RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_run_paths_that_cannot_work_are_refused(emulator_server, tmp_path, flags, words):
    make_paths(tmp_path)
    flags = ["--output-dir", "out", *flags] if "--output-dir" not in flags else flags

    assert_refused(engine_cli(tmp_path, cli_env(emulator_server), "run", "m.jsonl", *flags), *words)

    assert_nothing_paid(emulator_server)
    assert not (tmp_path / "m.jsonl").read_text().startswith('{"k"')  # never written over


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--output", "adir"], ("--output", "is a directory")),
        (["--output", "missing/x.csv"], ("--output", "does not exist")),
        (["--output", "hardlink.jsonl"], ("the manifest and --output",)),
        (["--output", "out/journal.jsonl"], ("the journal and --output",)),
    ],
)
def test_export_output_that_cannot_work_is_refused(tmp_path, flags, words):
    make_paths(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "journal.jsonl").write_text("")

    result = engine_cli(
        tmp_path, dict(os.environ), "export", "m.jsonl", "--output-dir", "out", *flags
    )

    assert_refused(result, *words)


def test_a_journal_the_disk_refuses_is_one_line(emulator_server, tmp_path):
    # A file-size limit plays a full disk: every write past it fails (EFBIG, not a signal).
    write_jsonl(tmp_path / "m.jsonl", image_jobs(5))

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        # Room for the journal's first record, not for the first create's.
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    result = subprocess.run(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", "--concurrency", "1"],
        env=cli_env(emulator_server),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=limit_files,
    )

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "journal" in errors[0]
    assert "File too large" in errors[0]
    # The first create's record could not be made durable: nothing was sent, nothing paid.
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


def test_logs_and_state_inside_the_output_folder_apart_from_outputs_are_fine(
    emulator_server, tmp_path
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    flags = ["--state", "out/state/run.jsonl", "--json-logs", "out/logs/run.jsonl"]
    flags += ["--log-file", "out/logs/run.log"]

    result = engine_cli(
        tmp_path, cli_env(emulator_server), "run", "m.jsonl", "--output-dir", "out", *flags
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "logs" / "run.jsonl").stat().st_size > 0
    assert (tmp_path / "out" / "logs" / "run.log").stat().st_size > 0
    assert (tmp_path / "out" / "state" / "run.jsonl").stat().st_size > 0


def test_a_manifest_that_is_a_fifo_or_folder_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    env = dict(os.environ)

    assert_refused(engine_cli(tmp_path, env, "run", "fifo.jsonl"), "not a regular file")
    assert_refused(engine_cli(tmp_path, env, "run", "folder.jsonl"), "is a directory")


@pytest.mark.parametrize("target", ["adir", "fifo"])
def test_status_of_a_journal_that_is_a_folder_or_fifo_is_refused(tmp_path, target):
    make_paths(tmp_path)

    result = engine_cli(tmp_path, dict(os.environ), "status", "m.jsonl", "--state", target)

    assert_refused(result, target)
