"""A server that echoes the token (even cut by a line break) never gets it into the
journal, the report or the logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import write_jsonl
from tests.support import tls_server

ENGINE = [sys.executable, "-m", "engine"]
TOKENS = [
    "r8_" + "Q7x2Lk9Zp4Wm1Nc8Vb3Hd6Jf0Tg5Rs2Ye7Ua9I",  # Replicate's shape: caught even unknown
    "custom-Secret-0123456789-abcdefghij",  # any other shape: caught as the run's own token
]


def json_answer(status: str, body: Any) -> bytes:
    data = json.dumps(body).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
    return f"{head}\r\nConnection: close\r\n\r\n".encode() + data


def echo(token: str) -> str:
    """Return the token the way a careless server wraps it: cut by a line break."""
    return f"your header was 'Bearer {token[:17]}\n  {token[17:]}', which we did not expect"


def hostile_api(token: str):
    def answer(line: str, _headers: dict[str, str]) -> bytes:
        method, path, _ = line.split(" ")
        if method == "GET" and path.startswith("/v1/predictions"):
            return json_answer("200 OK", {"results": [], "next": None})
        if "/reject/" in path:
            return json_answer("422 Unprocessable Entity", {"title": "Bad", "detail": echo(token)})
        if "/broken/" in path:
            return json_answer("500 Internal Server Error", {"detail": echo(token)})
        return json_answer(
            "201 Created",
            {
                "id": "failedpred",
                "model": "test/fails",
                "version": "v1",
                "status": "failed",
                "input": {},
                "output": None,
                "logs": echo(token),
                "error": f"model crashed: {echo(token)}",
                "created_at": "2026-01-01T00:00:00Z",
                "urls": {"get": "https://x/v1/predictions/failedpred"},
            },
        )

    return answer


LOGS = ("--json-logs", "log.jsonl")


@pytest.mark.parametrize("token", TOKENS, ids=["r8-token", "other-token"])
def test_a_token_echoed_by_the_server_reaches_no_file(tmp_path: Path, token: str) -> None:
    jobs = [
        {"id": "rejected", "model": "test/reject", "input": {"prompt": "a"}},
        {"id": "broken", "model": "test/broken", "input": {"prompt": "b"}},
        {"id": "fails", "model": "test/fails", "input": {"prompt": "c"}},
    ]
    write_jsonl(tmp_path / "m.jsonl", jobs)
    with tls_server(tmp_path / "ca.pem", hostile_api(token)) as (url, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
        env |= {
            "REPLICATE_API_TOKEN": token,
            "REPLICATE_BASE_URL": url,
            "SSL_CERT_FILE": str(tmp_path / "ca.pem"),
        }
        result = subprocess.run(
            # A 5xx create may have stored a prediction: each is looked for again after
            # --settle (30 s by default) before it is re-sent; this server has no list lag.
            [*ENGINE, "run", "m.jsonl", "--output-dir", "out", *LOGS, "--settle", "0.2"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert result.returncode == 1, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["failed_keys"] == ["fails", "rejected"]  # the server was heard
    # A create answered 5xx past its retries made no prediction: left for the next run.
    assert report["deferred"] == 1
    texts = {
        "journal": (tmp_path / "out" / "journal.jsonl").read_text(),
        "report": (tmp_path / "out" / "report.json").read_text(),
        "logs": (tmp_path / "log.jsonl").read_text(),
        "console": result.stdout + result.stderr,
    }
    assert "which we did not expect" in texts["journal"]  # the message itself is kept
    pieces = [token[i : i + 8] for i in range(0, len(token) - 8, 4)]
    for name, text in texts.items():
        leaked = [piece for piece in pieces if piece in text]
        assert not leaked, f"{name} holds {leaked}"
