"""Shared helpers for the benchmarks: an emulator subprocess, manifests, tables.

Every benchmark runs the emulator as a separate process (``python -m engine emulator``)
so the CPU it burns is not charged to the client under test, and starts a fresh one per
contender so counters and rate-limit buckets never leak from one contender to the next.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TOKEN = "r8_emulator_token"
FLUX = "black-forest-labs/flux-schnell"
VIDEO = "kling-ai/kling-video"
HUGE = 10_000_000.0  # a rate or burst no benchmark reaches


def instant_knobs() -> dict[str, Any]:
    """Emulator knobs with no rate limit and zero model time: only the client's cost shows."""
    return {
        "create_rate_per_min": HUGE,
        "create_burst": 1_000_000,
        "read_rate_per_min": HUGE,
        "read_burst": 1_000_000,
        "model_timings": {FLUX: {"cold_start": 0.0, "run_time": 0.0}},
    }


@dataclass
class Emulator:
    """A running emulator subprocess: where it is and how to reach it."""

    proc: subprocess.Popen[str]
    base_url: str
    ca_file: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        """Return a sync httpx client trusting the emulator's CA."""
        return httpx.Client(verify=str(self.ca_file), timeout=30.0, **kwargs)

    def stats(self) -> dict[str, Any]:
        """Return ``GET /_emulator/stats``."""
        with self.client() as c:
            return c.get(f"{self.base_url}/_emulator/stats").json()

    def configure(self, **knobs: Any) -> None:
        """Change knobs of the running emulator (``POST /_emulator/config``)."""
        with self.client() as c:
            c.post(f"{self.base_url}/_emulator/config", json=knobs).raise_for_status()

    def env(self) -> dict[str, str]:
        """Return an environment pointing a client subprocess at this emulator."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
        env.update(
            REPLICATE_API_TOKEN=TOKEN,
            REPLICATE_BASE_URL=self.base_url,
            SSL_CERT_FILE=str(self.ca_file),
            PYTHONPATH=str(ROOT),
        )
        return env


@contextmanager
def emulator(knobs: Mapping[str, Any], workdir: Path) -> Iterator[Emulator]:
    """Start ``python -m engine emulator`` with ``knobs``; stop it (SIGTERM) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"emulator-{time.monotonic_ns()}.json"
    cfg.write_text(json.dumps(dict(knobs)))
    ca = workdir / "emulator-ca.pem"
    proc = subprocess.Popen(
        [PY, "-m", "engine", "emulator", "--port", "0", "--ca-file", str(ca), "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("https://"):
            raise RuntimeError(f"emulator did not start (got {line!r})")
        yield Emulator(proc, line, ca)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def flux_jobs(n: int, prefix: str = "j") -> Iterator[dict[str, Any]]:
    """Yield ``n`` distinct flux-schnell jobs with explicit ids."""
    for i in range(n):
        yield {"id": f"{prefix}{i:07d}", "model": FLUX, "input": {"prompt": f"{prefix} {i}"}}


def write_jsonl(path: Path, jobs: Iterable[Mapping[str, Any]]) -> Path:
    """Write a JSONL manifest, streaming (a million lines never sit in memory)."""
    with path.open("w", encoding="utf-8") as f:
        for job in jobs:
            f.write(json.dumps(job, separators=(",", ":")) + "\n")
    return path


def tempdir(prefix: str) -> Path:
    """Return a fresh temporary directory (left behind on purpose for inspection)."""
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "") -> str:
    """Return a plain-text, Markdown-compatible table."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    out = [f"### {title}", ""] if title else []
    out.append(line(list(headers)))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def run_child(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run a Python child that prints one JSON line last; return it (plus exit code)."""
    proc = subprocess.run(
        [PY, *argv],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"child {argv[:3]} failed with exit {proc.returncode}")
    return json.loads(lines[-1])


def creates_per_min(times: Sequence[float], trim: float = 0.1) -> float:
    """Return creates/min over the steady state: drop the first and last ``trim`` fraction."""
    ts = sorted(times)
    if len(ts) < 10:
        return float("nan")
    lo, hi = int(len(ts) * trim), int(len(ts) * (1 - trim)) - 1
    span = ts[hi] - ts[lo]
    return (hi - lo) / span * 60.0 if span > 0 else float("nan")


def engine_run(manifest: Path, out: Path, *flags: str) -> list[str]:
    """Return the argv of ``python -m engine run MANIFEST --output-dir OUT FLAGS...``."""
    return [PY, "-m", "engine", "run", str(manifest), "--output-dir", str(out), *flags]


def add_child_arguments(parser: Any, contenders: Sequence[str]) -> None:
    """Add the hidden options a benchmark passes to its own child process."""
    parser.add_argument("--child", choices=contenders, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)


def child_argv(script: str, name: str, manifest: Path, out: Path, **options: object) -> list[str]:
    """Return the argv that runs contender ``name`` of ``script`` (see `add_child_arguments`);
    each keyword becomes ``--option value``."""
    argv = [script, "--child", name, "--manifest", str(manifest), "--out", str(out)]
    for option, value in options.items():
        argv += [f"--{option.replace('_', '-')}", str(value)]
    return argv
