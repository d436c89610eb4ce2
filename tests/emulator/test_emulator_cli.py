"""The ``emulator`` command: prints its URL, serves HTTPS, exits 0 on SIGTERM and SIGINT."""

from __future__ import annotations

import signal
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
