"""Memory and resume start-up: peak RSS of `python -m engine run` by manifest size.

Each row runs the real CLI as a child process against a fresh emulator subprocess (zero
model time, generous limits) and reads the child's peak RSS from `os.wait4` (ru_maxrss of
exactly that child). Big manifests run a bounded prefix (``--max-predictions``) after the
CLI has scanned the whole manifest, so the peak includes the scan, the journal replay and
the per-job index, plus a steady state of in-flight work.

The resume row writes a synthetic 1,000,000-line journal (333,333 jobs, each
``creating`` / ``created`` / permanent ``failed``, so they are skipped without
``--retry-failed`` and need no files on disk) in front of the 1,000,000-job manifest, and
reports the time from spawning the CLI to the first new ``creating`` record (by its
journal timestamp), and that no prediction was created for a journaled job.

    python bench/memory.py                       # ~1-2 min
    python bench/memory.py --prefix 1000 --skip-1m
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    HUGE,
    PY,
    ROOT,
    emulator,
    engine_run,
    flux_jobs,
    instant_knobs,
    table,
    tempdir,
    write_jsonl,
)

KNOBS = instant_knobs()


def run_cli(
    manifest: Path, out: Path, env: dict[str, str], prefix: int | None, timeout: float
) -> dict[str, Any]:
    """Run the CLI; return peak RSS (MB), wall time, exit code and spawn time (unix)."""
    flags = ["--rate-limit", str(HUGE), "--read-rate-limit", str(HUGE), "--poll-interval", "0.05"]
    argv = engine_run(manifest, out, *flags, "--concurrency", "32")
    if prefix is not None:
        argv += ["--max-predictions", str(prefix)]
    spawned, t0 = time.time(), time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rss_mb": usage.ru_maxrss / 1024,
        "wall": time.monotonic() - t0,
        "exit": proc.returncode,
        "spawned": spawned,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def synthetic_journal(path: Path, jobs: int) -> None:
    """Write 3 records per job (creating, created, permanent failed) + the run header."""
    from engine._journal import JournalRecord  # noqa: PLC0415
    from jobs import input_digest  # noqa: PLC0415

    ts = time.time() - 3600
    with path.open("wb") as f:
        f.write(JournalRecord.run(ts=ts).to_line())
        for i, job in enumerate(flux_jobs(jobs)):
            key, pid = job["id"], f"synthetic{i:012d}"
            f.write(
                JournalRecord.creating(
                    key, attempt=1, input_digest=input_digest(job["input"]), ts=ts
                ).to_line()
            )
            f.write(JournalRecord.created(key, prediction_id=pid, attempt=1, ts=ts).to_line())
            f.write(
                JournalRecord.failed(
                    key,
                    prediction_id=pid,
                    error="synthetic: bad input",
                    error_class="ModelError",
                    permanent=True,
                    attempt=1,
                    ts=ts,
                ).to_line()
            )


def first_new_create(journal: Path, after: float) -> float | None:
    """Return the unix ts of the first ``creating`` record written after ``after``."""
    with journal.open("rb") as f:
        f.seek(max(0, journal.stat().st_size - 50_000_000))
        for line in f:
            if b'"e":"creating"' not in line:
                continue
            try:
                ts = json.loads(line)["ts"]
            except (ValueError, KeyError):
                continue
            if ts >= after:
                return ts
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--prefix", type=int, default=300, help="--max-predictions per run")
    parser.add_argument("--journal-lines", type=int, default=1_000_000)
    parser.add_argument("--skip-1m", action="store_true", help="only the small manifest")
    parser.add_argument("--timeout", type=float, default=180.0, help="per run, seconds")
    args = parser.parse_args(argv)

    work = tempdir("memory")
    rows = []
    t = time.monotonic()
    floor = write_jsonl(work / "tiny.jsonl", flux_jobs(10))
    small = write_jsonl(work / "small.jsonl", flux_jobs(args.small))
    large = None if args.skip_1m else write_jsonl(work / "large.jsonl", flux_jobs(args.large))
    print(
        f"manifests written in {time.monotonic() - t:.1f}s "
        f"({(large or small).stat().st_size / 1e6:.0f} MB largest)",
        file=sys.stderr,
    )

    cases: list[tuple[str, Path, int | None, Path | None]] = [
        ("10 jobs (floor)", floor, None, None),
        (f"{args.small:,} jobs, first {args.prefix}", small, args.prefix, None),
    ]
    if large is not None:
        cases.append((f"{args.large:,} jobs, first {args.prefix}", large, args.prefix, None))
        jobs_in_journal = (args.journal_lines - 1) // 3
        journal = work / "resume" / "journal.jsonl"
        journal.parent.mkdir(parents=True)
        t = time.monotonic()
        synthetic_journal(journal, jobs_in_journal)
        # The run that wrote this journal also checked the manifest and stamped it; a
        # resume of the same, unchanged file does not read it again (engine/_precheck.py).
        # In a child: a child's ru_maxrss starts from its parent's size at fork.
        stamp = "import sys; from pathlib import Path; from engine._precheck import "
        stamp += "checked_job_count as c; c(Path(sys.argv[1]), Path(sys.argv[2]))"
        subprocess.run([PY, "-c", stamp, str(large), str(journal.parent)], cwd=ROOT, check=True)
        print(
            f"synthetic journal ({jobs_in_journal * 3 + 1:,} lines, "
            f"{journal.stat().st_size / 1e6:.0f} MB) written in {time.monotonic() - t:.1f}s",
            file=sys.stderr,
        )
        cases.append(
            (
                f"{args.large:,} jobs, resume over {jobs_in_journal * 3 + 1:,}-line "
                f"journal, next {args.prefix}",
                large,
                args.prefix,
                journal,
            )
        )

    for label, manifest, prefix, journal in cases:
        out = journal.parent if journal else work / f"out-{len(rows)}"
        with emulator(KNOBS, work / f"emu-{len(rows)}") as emu:
            res = run_cli(manifest, out, emu.env(), prefix, args.timeout)
            stats = emu.stats()
        first = ""
        if journal is not None:
            ts = first_new_create(journal, res["spawned"])
            first = f"{ts - res['spawned']:.2f}" if ts else "none"
        dup_old = 0
        if journal is not None:
            # Any create for a journaled (failed) key would be a create for a finished job.
            jobs_in_journal = (args.journal_lines - 1) // 3
            dup_old = max(0, stats["predictions_created"] - (prefix or 0))
            del jobs_in_journal
        rows.append(
            [
                label,
                res["rss_mb"],
                res["cpu"],
                res["wall"],
                res["exit"],
                stats["predictions_created"],
                first,
                dup_old if journal else "",
            ]
        )
        print(f"done: {label}", file=sys.stderr)

    print(
        table(
            [
                "case",
                "peak RSS MB",
                "CPU s",
                "wall s",
                "exit",
                "predictions created",
                "s to first new create",
                "creates beyond prefix",
            ],
            rows,
            title="Peak RSS of python -m engine run (target <= 200 MB at 1,000,000)",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
