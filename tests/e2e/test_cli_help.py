"""The help a user reads: nothing cut at 80 columns, and exit codes that are the truth.

Each command's "Exit codes:" block is `engine._cli_exits`'s table; the commands that
list 141 end with it when the reader of standard output goes away, the others do not
write there at all.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import click
import pytest

from engine import _report
from engine._cli_exits import EXIT_CODES, GENERAL
from engine.cli import cli
from tests.e2e.helpers import cli_env, image_jobs, write_jsonl
from tests.e2e.test_cli import ENGINE, run_cli

ROOT = Path(__file__).resolve().parents[2]
CODE_LINE = re.compile(r"^\s+(\d+)\s+(\S.*)$")


def command_paths(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    """Return every command under ``group`` by its path ("run", "journal export")."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found |= command_paths(command, f"{path} ")
        elif name != "emulator":  # its own program, with its own help
            found[path] = command
    return found


def help_at_80_columns(*words: str, cwd: Path) -> str:
    result = run_cli(*words, "--help", env=dict(os.environ, COLUMNS="80"), cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed_exit_codes(text: str) -> dict[int, str]:
    block = text.split("Exit codes", 1)[1].split("\n\n", 1)[0]
    return {int(m[1]): m[2] for m in map(CODE_LINE.match, block.splitlines()[1:]) if m}


def test_the_command_lists_fit_80_columns_and_cut_no_description(tmp_path):
    for words, group in (((), cli), (("journal",), cli.commands["journal"])):
        text = help_at_80_columns(*words, cwd=tmp_path)
        listing = text.split("Commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()

        assert isinstance(group, click.Group)
        assert len(listing) == len(group.commands), text
        for name, command in group.commands.items():
            assert command.short_help, f"{name} has no short help"
            assert f"  {name} " in text
            assert any(line.endswith(command.short_help) for line in listing), (name, text)
        assert not [line for line in listing if line.endswith("...")], text


def test_no_line_of_any_help_is_longer_than_80_columns(tmp_path):
    for words in ((), ("journal",), *(path.split() for path in command_paths())):
        text = help_at_80_columns(*words, cwd=tmp_path)

        assert [line for line in text.splitlines() if len(line) > 80] == [], words
        assert not re.search(r"x[<>]=?\d", text), words  # click's range notation ("x>0")


def test_each_help_lists_exactly_the_exit_codes_of_the_one_table(tmp_path):
    every_code = {v for k, v in vars(_report).items() if k.startswith("EXIT_")}

    assert set(EXIT_CODES) == set(command_paths())
    assert listed_exit_codes(help_at_80_columns(cwd=tmp_path)) == dict(GENERAL)
    for path, codes in EXIT_CODES.items():
        assert listed_exit_codes(help_at_80_columns(*path.split(), cwd=tmp_path)) == dict(codes)
        assert set(codes) <= every_code, path
    readme = (ROOT / "README.md").read_text()
    readme_table = readme.split("Exit codes say why a run stopped", 1)[1].split("\n\n", 2)[1]
    assert {int(c) for c in re.findall(r"^\| `(\d+)` \|", readme_table, re.M)} == set(GENERAL)


def with_stdout_closed(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.Popen(
        [*ENGINE, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the command writes a byte
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr
    return proc.returncode, stderr


def test_a_reader_that_goes_away_ends_with_141_where_the_help_says_so(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    gallery = tmp_path / "outputs" / "m" / "index.html"
    assert run_cli("run", "m.jsonl", env=env, cwd=tmp_path).returncode == 0
    gallery.unlink()

    cases = {
        ("--help",): 141,
        ("run", "--help"): 141,
        ("run", "m.jsonl"): 141,  # the summary is lost; the run's own work is not
        ("validate", "m.jsonl"): 141,
        ("gallery", "m.jsonl"): 0,  # it writes to standard error only
    }
    for args, expected in cases.items():
        code, stderr = with_stdout_closed(*args, env=env, cwd=tmp_path)

        assert code == expected, (args, stderr)
        listed = EXIT_CODES.get(args[0], GENERAL) if "--help" not in args else GENERAL
        assert expected in listed, args
    assert gallery.is_file()  # written by the run whose summary nobody read


def test_a_group_without_its_command_shows_its_help_not_an_error_wrapped_round_it(tmp_path):
    result = run_cli("journal", env=dict(os.environ), cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.startswith("Usage: python -m engine journal ")
    assert "error:" not in result.stderr
    assert "(see '" not in result.stderr


def with_both_closed(*args: str, env: dict[str, str], cwd: Path) -> int:
    """Run with standard output and error on one pipe whose reader is already gone, as
    ``... 2>&1 | head -1`` once head has its line."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [*ENGINE, *args], env=env, cwd=cwd, stdout=write, stderr=write, timeout=60, check=False
        )
    finally:
        os.close(write)
    return proc.returncode


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("run", "m.jsonl"), 141),
        (("run", "m.jsonl", "--emulator", "--output-dir", "emu"), 141),
        (("run", "m.jsonl", "--max-predictions", "1", "--output-dir", "cut"), 141),
        (("validate", "m.jsonl"), 141),
        (("status", "m.jsonl"), 141),
        (("export", "m.jsonl"), 141),
        (("cancel", "m.jsonl", "--dry-run"), 141),
        (("gallery", "m.jsonl"), 0),  # standard error only: lost, the page is written
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_output_and_errors_on_a_pipe_already_closed_never_exit_1(
    emulator_server, tmp_path, args, expected
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    if args[0] != "run":
        assert run_cli("run", "m.jsonl", env=env, cwd=tmp_path).returncode == 0

    code = with_both_closed(*args, env=env, cwd=tmp_path)

    assert code == expected, args
    listed = EXIT_CODES[args[0]]
    assert expected in listed, args
    if args[0] == "run":  # the run's own work is done all the same, and its page written
        out = tmp_path / ("outputs/m" if "--output-dir" not in args else args[-1])
        assert (out / "report.json").is_file()
        assert (out / "index.html").is_file()
