"""Every snippet of README.md works as written.

Each ```python block runs in a fresh interpreter, in a scratch folder holding a copy of
``manifests/``, with the environment pointing at the emulator (the snippets read the
token and URL from it, as they would Replicate's). Each ``python -m engine`` command of a
```bash or ```console block names a subcommand whose ``--help`` exits 0 and lists every
option the command uses. Each ```yaml block is a manifest that reads.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from engine import read_manifest
from engine.emulator import EmulatorServer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ENGINE = re.compile(r"^(?:\.venv/bin/)?python -m engine\b")


def _blocks(*languages: str) -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) in languages
    ]


def _engine_commands() -> list[tuple[int, list[str]]]:
    commands = []
    for line_no, body in _blocks("bash", "console"):
        for offset, raw in enumerate(body.splitlines()):
            line = raw.removeprefix("$ ") if raw.startswith("$ ") else raw
            for part in (p.strip() for p in line.split("&&")):
                if ENGINE.match(part):
                    argv = shlex.split(part, comments=True)
                    commands.append((line_no + 1 + offset, argv[argv.index("engine") + 1 :]))
    return commands


PYTHON = _blocks("python")
YAML = _blocks("yaml")
COMMANDS = _engine_commands()


def test_the_readme_has_the_snippets_this_test_expects() -> None:
    # A broken fence pattern would silently run nothing.
    assert len(PYTHON) >= 3
    assert len(YAML) >= 1
    assert {argv[0] for _, argv in COMMANDS} >= {"run", "status", "emulator"}


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"README.md:{n}" for n, _ in PYTHON])
def test_python_snippet_runs(
    line: int, code: str, replicate_env: EmulatorServer, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"README.md:{line}\n{done.stderr}"
    assert done.stderr == ""  # the library is silent in an app that configured no logging


@cache
def _help(subcommand: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", subcommand, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("line", "argv"), COMMANDS, ids=[f"README.md:{n}" for n, _ in COMMANDS])
def test_engine_command_parses(line: int, argv: list[str]) -> None:
    shown = _help(argv[0])
    assert shown.returncode == 0, f"README.md:{line}: {shown.stderr}"
    for option in (a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")):
        assert re.search(rf"{re.escape(option)}\b", shown.stdout), f"README.md:{line}: {option}"


@pytest.mark.parametrize(("line", "text"), YAML, ids=[f"README.md:{n}" for n, _ in YAML])
def test_manifest_snippet_reads(line: int, text: str, tmp_path: Path) -> None:
    manifest = tmp_path / "snippet.yaml"
    manifest.write_text(text, encoding="utf-8")
    assert list(read_manifest(manifest)), f"README.md:{line}"
