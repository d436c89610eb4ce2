"""The ``emulator`` command: prints its URL, serves HTTPS, exits 0 on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

SCRIPT = "from engine.emulator.cli import serve_forever; raise SystemExit(serve_forever())"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_url_serves_and_stops(tmp_path: Path, sig: signal.Signals) -> None:
    ca = tmp_path / "ca.pem"
    config = tmp_path / "emulator.yaml"
    config.write_text("time_scale: 0.01\n")
    args = ["--port", "0", "--ca-file", str(ca), "--token", "r8_cli", "--config", str(config)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        response = httpx.get(
            f"{url}/v1/account",
            headers={"Authorization": "Bearer r8_cli"},
            verify=ssl.create_default_context(cafile=str(ca)),
        )
        assert response.status_code == 200
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_taken_port_or_a_bad_settings_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "knob.yaml").write_text("nosuchknob: 1\n")
    (tmp_path / "torn.yaml").write_text("time_scale: [\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            (
                "--port",
                str(port),
            ): f"error: cannot serve on 127.0.0.1:{port}: Address already in use",
            ("--config", "missing.yaml"): "error: --config missing.yaml: No such file or directory",
            (
                "--config",
                "knob.yaml",
            ): "error: --config knob.yaml: unknown emulator knob 'nosuchknob'",
            ("--config", "torn.yaml"): "error: --config torn.yaml: ",
        }
        for args, said in cases.items():
            result = subprocess.run(
                [sys.executable, "-m", "engine", "emulator", *args],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                timeout=30,
                check=False,
            )

            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.startswith(said), (args, result.stderr)
            assert len(result.stderr.splitlines()) == 1, result.stderr
            assert result.stdout == ""
