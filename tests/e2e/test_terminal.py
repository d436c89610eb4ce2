"""What a person sees: the live panel in a real terminal (tmux), and plain text without one."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.emulator import EmulatorConfig
from engine.emulator.config import ModelTiming
from tests.e2e.helpers import FAILS, FLUX, cli_env, image_jobs, write_jsonl

ENGINE = [sys.executable, "-m", "engine"]
PANEL_ROW = "done / total"
# A colour in an SGR sequence: 30-38/40-48 (and 38;5;n / 48;2;r;g;b), 90-97, 100-107.
_SGR = re.compile(r"\x1b\[([0-9;]*)m")


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Predictions of ~0.6 s at concurrency 3: a run lasts a few seconds, long enough for a
    # pane to be captured while the panel is live.
    return EmulatorConfig(model_timings={FLUX: ModelTiming(cold_start=0.05, run_time=0.5)})


def manifest_with_failures(tmp_path: Path) -> Path:
    """Write 12 image jobs with 3 always-failing jobs spread among them (warnings)."""
    jobs = image_jobs(12)
    for n, at in enumerate((2, 7, 12)):
        jobs.insert(at, {"id": f"bad{n}", "model": FAILS, "input": {"prompt": f"bad {n}"}})
    return write_jsonl(tmp_path / "m.jsonl", jobs)


class Pane:
    """One tmux server of our own (its own socket), running one command in one pane."""

    def __init__(self, tmp_path: Path, name: str = "tmux") -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is required for the terminal tests (apt-get install tmux)")
        self.tmux = tmux
        self.socket = str(tmp_path / f"{name}.sock")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-S", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def start(self, script: Path, *, width: int = 100, height: int = 40) -> None:
        self._tmux(
            "-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height),
            f"bash --norc --noprofile {shlex.quote(str(script))}",
        )  # fmt: skip

    def capture(self, *, history: bool = False, escapes: bool = False) -> str:
        args = ["capture-pane", "-p", "-J"]
        if history:
            args += ["-S", "-"]
        if escapes:
            args.append("-e")
        return self._tmux(*args)

    def wait_for(self, ready: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.capture(history=True)
            if ready(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"the pane never got there; it shows:\n{self.capture(history=True)}")

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "-S", self.socket, "kill-server"], capture_output=True, check=False
        )


@pytest.fixture
def panes(tmp_path: Path) -> Iterator[Callable[[str], Pane]]:
    opened: list[Pane] = []

    def open_pane(name: str) -> Pane:
        opened.append(Pane(tmp_path, name))
        return opened[-1]

    try:
        yield open_pane
    finally:
        for p in opened:
            p.close()


def script_for(tmp_path: Path, env: dict[str, str], *args: str) -> Path:
    """Write a script that runs the engine in the pane, then says how it exited."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    command = shlex.join([*ENGINE, *args])
    script = tmp_path / "session.sh"
    script.write_text(
        f"{exports}cd {shlex.quote(str(tmp_path))}\n{command}\necho EXIT=$?\nexec sleep 600\n"
    )
    return script


def colours(text: str) -> list[str]:
    """Return every SGR parameter that sets a colour (bold and dim are not colours)."""
    found = []
    for params in _SGR.findall(text):
        for p in params.split(";"):
            if p.isdigit() and (30 <= int(p) <= 48 or 90 <= int(p) <= 107) and int(p) != 39:
                found.append(p)
    return found


def test_warnings_print_above_the_live_panel_without_tearing_it(emulator_server, panes, tmp_path):
    pane = panes("live")
    manifest = manifest_with_failures(tmp_path)
    env = cli_env(emulator_server)
    pane.start(
        script_for(
            tmp_path,
            env,
            "run",
            str(manifest),
            "--output-dir",
            "out",
            "--concurrency",
            "3",
            "--max-retries",
            "0",
            "--poll-interval",
            "0.05",
        )
    )

    during = pane.wait_for(lambda s: "job.failed" in s and PANEL_ROW in s and "EXIT=" not in s)
    after = pane.wait_for(lambda s: "EXIT=" in s)

    # While it runs: one panel, below the warnings, and every warning line whole.
    assert during.count(PANEL_ROW) == 1, during
    assert during.index("job.failed") < during.index(PANEL_ROW), during
    # After: the panel was never torn into the scrollback (one copy, the final counts),
    # each failure is one readable line, and the summary follows.
    assert after.count(PANEL_ROW) == 1, after
    assert re.search(r"done / total +12 / 15", after), after
    failures = [line for line in after.splitlines() if "job.failed" in line]
    assert len(failures) == 3, after
    for line in failures:
        assert re.match(r"\d\d:\d\d:\d\d WARNING job\.failed job=bad\d ", line), line
        assert "callable=" not in line
    assert "Run summary" in after
    assert "EXIT=1" in after
    assert "Traceback" not in after


def test_no_color_is_honoured_on_a_terminal_including_log_lines(emulator_server, panes, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [*image_jobs(2), {"id": "bad", "model": FAILS, "input": {"prompt": "x"}}],
    )
    env = cli_env(emulator_server)
    args = ("run", str(manifest), "--max-retries", "0", "--poll-interval", "0.05")

    first = panes("coloured")
    first.start(script_for(tmp_path, env, *args, "--output-dir", "coloured"))
    first.wait_for(lambda s: "EXIT=" in s)
    coloured = first.capture(history=True, escapes=True)
    second = panes("plain")
    second.start(script_for(tmp_path, {**env, "NO_COLOR": "1"}, *args, "--output-dir", "plain"))
    second.wait_for(lambda s: "EXIT=" in s)
    plain = second.capture(history=True, escapes=True)

    assert "job.failed" in coloured
    assert colours(coloured), "the warning should be coloured without NO_COLOR"
    assert "job.failed" in plain
    assert colours(plain) == [], plain


def test_without_a_terminal_progress_is_a_plain_line_and_the_summary_does_not_wrap(
    emulator_server, tmp_path
):
    # 9 jobs of ~0.6 s at concurrency 1 last past the first progress line (5 s).
    jobs = [*image_jobs(8), {"id": "bad-" + "x" * 90, "model": FAILS, "input": {"prompt": "x"}}]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    env = {**cli_env(emulator_server), "COLUMNS": "80"}

    result = subprocess.run(
        [*ENGINE, "run", str(manifest), "--concurrency", "1", "--max-retries", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    progress = [line for line in result.stderr.splitlines() if " progress: " in line]
    assert progress, result.stderr
    assert re.search(r"progress: \d+/9 done, \d+ failed, \d+ in flight", progress[0])
    lines = result.stdout.splitlines()
    assert lines[0] == "Run summary"
    # Long values stay on their line: the failed job's id and the absolute output path.
    assert "failed jobs: bad-" + "x" * 90 in lines
    out = (tmp_path / "outputs" / "m").resolve()
    assert lines[-1] == f"outputs in {out}/ ; report in {out / 'report.json'}"
    assert not any(line.startswith(("│", "┌", "└")) for line in lines)


def test_quiet_prints_only_errors_and_the_summary(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [*image_jobs(2), {"id": "bad", "model": FAILS, "input": {"prompt": "x"}}],
    )
    log_file = tmp_path / "run.log"

    result = subprocess.run(
        [*ENGINE, "run", str(manifest), "-q", "--max-retries", "0", "--log-file", str(log_file)],
        env=cli_env(emulator_server),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr == ""
    assert "Run summary" in result.stdout
    # The text log still has the whole story, one readable line per event.
    text = log_file.read_text()
    assert "run.started" in text
    assert re.search(r"WARNING job\.failed job=bad ", text)
    assert "\x1b" not in text
    assert not text.lstrip().startswith("{")
