"""Crash harness: SIGKILL `python -m engine run` at random moments, re-run until done.

One emulator subprocess lives through the whole sequence (so its counters see every
create of every run), with faults on: create 5xx (some after the prediction is stored,
i.e. orphans the engine must reconcile), GET 5xx, and downloads cut mid-body. The engine
CLI is started, killed with SIGKILL after a random delay, N times; then re-run (no kill)
until it exits 0. Reported:

  lost outputs     jobs not done at the end, or done with a file missing on disk
  corrupt files    sha256 on disk != the journal's ``sha``, or != a fresh download of the
                   same output URL from the emulator
  duplicates       predictions created more than once for one (model, input), per the
                   emulator; expected at most one per kill (a create in flight at the kill
                   whose orphan the reconcile could not find) -- reported, not hidden
  torn/corrupt     journal lines the replay skipped, checked after each kill

    python bench/crash.py                    # 200 jobs, 8 kills, ~1 min
    python bench/crash.py --jobs 500 --kills 15
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    FLUX,
    ROOT,
    emulator,
    engine_run,
    flux_jobs,
    table,
    tempdir,
    write_jsonl,
)


def knobs(seed: int) -> dict[str, object]:
    return {
        "seed": seed,
        "create_rate_per_min": 1500.0,
        "create_burst": 50,
        "read_rate_per_min": 7500.0,
        "read_burst": 250,
        "model_timings": {FLUX: {"cold_start": 0.1, "run_time": 0.5}},
        "create_5xx_rate": 0.03,
        "create_5xx_after_store": True,
        "get_5xx_rate": 0.03,
        "cut_download_rate": 0.05,
    }


def cli(manifest: Path, out: Path) -> list[str]:
    flags = ["--rate-limit", "1500", "--read-rate-limit", "7500", "--poll-interval", "0.1"]
    return engine_run(manifest, out, *flags, "--concurrency", "32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--min-delay", type=float, default=0.3, help="seconds before a kill")
    parser.add_argument("--max-delay", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-finishing-runs", type=int, default=5)
    args = parser.parse_args(argv)

    from engine._journal import load_journal  # noqa: PLC0415
    from jobs import JobStatus  # noqa: PLC0415

    rng = random.Random(args.seed)
    work = tempdir("crash")
    manifest = write_jsonl(work / "jobs.jsonl", flux_jobs(args.jobs))
    out = work / "out"
    journal = out / "journal.jsonl"
    runs = []
    torn_total = corrupt_total = 0
    with emulator(knobs(args.seed), work / "emu") as emu:
        env = emu.env()
        for k in range(args.kills):
            delay = rng.uniform(args.min_delay, args.max_delay)
            proc = subprocess.Popen(
                cli(manifest, out),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                code = proc.wait(delay)
                killed = False
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                code = proc.wait()
                killed = True
            replay = load_journal(journal) if journal.exists() else None
            torn = replay.torn_lines if replay else 0
            corrupt = replay.corrupt_lines if replay else 0
            torn_total += torn
            corrupt_total += corrupt
            done = (
                sum(1 for s in replay.jobs.values() if s.status == JobStatus.DONE) if replay else 0
            )
            runs.append(
                [
                    f"run {k + 1}",
                    f"{delay:.2f}",
                    "SIGKILL" if killed else code,
                    done,
                    torn,
                    corrupt,
                    emu.stats()["predictions_created"],
                ]
            )
            if not killed and code == 0:
                break
        finishing = 0
        code = None if killed else code
        while finishing < args.max_finishing_runs and code != 0:
            finishing += 1
            code = subprocess.run(
                cli(manifest, out),
                cwd=ROOT,
                env=env,
                capture_output=True,
                timeout=300,
                check=False,
            ).returncode
            replay = load_journal(journal)
            done = sum(1 for s in replay.jobs.values() if s.status == JobStatus.DONE)
            runs.append(
                [
                    f"finish {finishing}",
                    "",
                    code,
                    done,
                    replay.torn_lines,
                    replay.corrupt_lines,
                    emu.stats()["predictions_created"],
                ]
            )
        stats = emu.stats()

        # Verify every output: on disk vs journal, and vs a fresh download from the emulator
        # (faults off first: the check must not be the thing that fails).
        emu.configure(cut_download_rate=0.0, get_5xx_rate=0.0, create_5xx_rate=0.0)
        replay = load_journal(journal)
        lost = corrupt_vs_journal = corrupt_vs_emulator = files = unverifiable = 0
        with emu.client(headers={"Authorization": f"Bearer {env['REPLICATE_API_TOKEN']}"}) as c:
            for key in (j["id"] for j in flux_jobs(args.jobs)):
                state = replay.jobs.get(key)
                if state is None or state.status != JobStatus.DONE or not state.files:
                    lost += 1
                    continue
                for i, f in enumerate(state.files):
                    files += 1
                    path = out / f.name
                    if not path.exists():
                        lost += 1
                        continue
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    if digest != f.sha256:
                        corrupt_vs_journal += 1
                    url = f.url or (state.outputs[i] if state.outputs else None)
                    if not url and f.name and state.prediction_id:
                        got = c.get(f"{emu.base_url}/v1/predictions/{state.prediction_id}")
                        output = got.json().get("output") if got.status_code == 200 else None
                        output = output if isinstance(output, list) else [output]
                        url = output[i] if i < len(output) else None
                    if not url:
                        unverifiable += 1
                        continue
                    r = c.get(url)
                    if r.status_code != 200:
                        unverifiable += 1
                    elif hashlib.sha256(r.content).hexdigest() != digest:
                        corrupt_vs_emulator += 1

    dups = stats["duplicates"]
    kills = sum(1 for r in runs if r[2] == "SIGKILL")
    print(
        f"{args.jobs} jobs, {kills} SIGKILLs at random moments "
        f"({args.min_delay}-{args.max_delay}s into each run), seed {args.seed}; faults: "
        "create 5xx 3% (after store), GET 5xx 3%, downloads cut 5%"
    )
    print(
        table(
            [
                "run",
                "killed after s",
                "exit",
                "jobs done",
                "torn lines",
                "corrupt lines",
                "predictions created (cumulative)",
            ],
            runs,
            title="Runs",
        )
    )
    print()
    print(
        table(
            ["metric", "value", "target"],
            [
                ["jobs", args.jobs, ""],
                ["lost outputs (job not done or file missing)", lost, "0"],
                ["files checked", files, ""],
                ["corrupt vs journal sha256", corrupt_vs_journal, "0"],
                ["corrupt vs fresh emulator download", corrupt_vs_emulator, "0"],
                ["files not re-downloadable (expired/no URL)", unverifiable, ""],
                ["predictions created", stats["predictions_created"], f">= {args.jobs}"],
                ["inputs created more than once", len(dups), f"<= kills ({kills}) + create 5xx"],
                ["extra predictions from duplicates", sum(n - 1 for n in dups.values()), ""],
                ["torn journal lines recovered (sum over kills)", torn_total, "reported"],
                ["corrupt journal lines (sum over kills)", corrupt_total, "0"],
                [
                    "create 5xx served",
                    sum(v for k, v in stats["requests"].items() if "predictions.create 5" in k),
                    "",
                ],
                ["downloads cut", stats["downloads_cut"], ""],
            ],
            title="Crash harness",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
