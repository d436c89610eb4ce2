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

The paths of issue 12 are attacked too:

  lock held        a second run of the same journal is started 0.2 s after each run
                   (a cron overlap): it must exit 2 while the first holds the lock, and
                   no run may ever be refused by the lock of a process already killed
  part validated   every ``--video-every``-th job is a video (``--video-size`` bytes), so
                   kills land mid-download and leave parts; every third run flips the
                   emulator's ``output_salt`` (same URLs, other bytes), so a part left
                   under one salt must be discarded, not spliced, under the other. Each
                   file must equal a fresh download under one of the salts used.

    python bench/crash.py                    # 200 jobs, 8 kills, ~1 min
    python bench/crash.py --jobs 500 --kills 15
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    FLUX,
    ROOT,
    VIDEO,
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
        "model_timings": {
            FLUX: {"cold_start": 0.1, "run_time": 0.5},
            VIDEO: {"cold_start": 0.1, "run_time": 0.5},
        },
        "create_5xx_rate": 0.03,
        "create_5xx_after_store": True,
        "get_5xx_rate": 0.03,
        "cut_download_rate": 0.05,
    }


def cli(manifest: Path, out: Path, log: Path) -> list[str]:
    flags = ["--rate-limit", "1500", "--read-rate-limit", "7500", "--poll-interval", "0.1"]
    return engine_run(manifest, out, *flags, "--concurrency", "32", "--json-logs", str(log))


def mixed_jobs(n: int, video_every: int) -> list[dict[str, object]]:
    """Return flux jobs with every ``video_every``-th one a video (a multi-MB download)."""
    jobs: list[dict[str, object]] = list(flux_jobs(n))
    if video_every > 0:
        for job in jobs[::video_every]:
            job["model"] = VIDEO
    return jobs


def log_events(folder: Path) -> dict[str, int]:
    """Count the events of interest in every run's --json-logs file."""
    wanted = ("download.resumed", "download.part_discarded", "download.part_replaced")
    counts = dict.fromkeys(wanted, 0)
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line).get("event")
            except ValueError:
                continue
            if event in counts:
                counts[event] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--min-delay", type=float, default=0.3, help="seconds before a kill")
    parser.add_argument("--max-delay", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-finishing-runs", type=int, default=5)
    parser.add_argument("--video-every", type=int, default=10, help="0: images only")
    parser.add_argument("--video-size", type=int, default=3 * 1024 * 1024)
    parser.add_argument("--no-overlap", action="store_true", help="no second run per run")
    args = parser.parse_args(argv)

    from engine._journal import load_journal  # noqa: PLC0415
    from jobs import JobStatus  # noqa: PLC0415

    rng = random.Random(args.seed)
    work = tempdir("crash")
    all_jobs = mixed_jobs(args.jobs, args.video_every)
    manifest = write_jsonl(work / "jobs.jsonl", all_jobs)
    out = work / "out"
    logs = work / "logs"
    logs.mkdir()
    journal = out / "journal.jsonl"
    runs = []
    torn_total = corrupt_total = 0
    salts = [""]
    overlaps_refused = overlaps_ran = overlaps_wrong = stale_refusals = parts_at_kills = 0
    with emulator({**knobs(args.seed), "video_size": args.video_size}, work / "emu") as emu:
        env = emu.env()
        for k in range(args.kills):
            if k % 3 == 2:  # same URLs, other bytes: parts left so far belong to old bytes
                salts.append(f"salt-{k}")
                emu.configure(output_salt=salts[-1])
            delay = rng.uniform(args.min_delay, args.max_delay)
            errors = logs / f"run-{k:03d}.stderr"
            with errors.open("w") as stderr_file:
                proc = subprocess.Popen(
                    cli(manifest, out, logs / f"run-{k:03d}.jsonl"),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr_file,
                )
            started = time.monotonic()
            if not args.no_overlap:
                time.sleep(0.2)
                second = subprocess.run(
                    cli(manifest, out, logs / f"overlap-{k:03d}.jsonl"),
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                first_alive = proc.poll() is None
                if second.returncode == 2 and "in use by pid" in second.stderr:
                    overlaps_refused += 1
                elif first_alive:
                    overlaps_wrong += 1  # both ran at once: the lock did not hold
                else:
                    overlaps_ran += 1  # the first had ended: running was right
            try:
                code = proc.wait(max(0.0, delay - (time.monotonic() - started)))
                killed = False
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                code = proc.wait()
                killed = True
                parts_at_kills += sum(1 for _ in out.rglob("*.part"))
            if code == 2 and "in use by pid" in errors.read_text(errors="replace"):
                stale_refusals += 1  # no other run was alive: a stale lock
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
                cli(manifest, out, logs / f"finish-{finishing}.jsonl"),
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
        # Each file must be one of the salts' bytes whole: a splice matches none of them.
        checks: list[tuple[str, str]] = []  # (url, digest on disk)
        with emu.client(headers={"Authorization": f"Bearer {env['REPLICATE_API_TOKEN']}"}) as c:
            for key in (str(j["id"]) for j in all_jobs):
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
                    checks.append((url, digest))
            fresh: dict[str, set[str]] = {}
            for salt in salts:
                emu.configure(output_salt=salt)
                for url, _ in checks:
                    r = c.get(url)
                    if r.status_code == 200:
                        fresh.setdefault(url, set()).add(hashlib.sha256(r.content).hexdigest())
            for url, digest in checks:
                if url not in fresh:
                    unverifiable += 1
                elif digest not in fresh[url]:
                    corrupt_vs_emulator += 1
    events = log_events(logs)
    discarded = events["download.part_discarded"]
    replaced = events["download.part_replaced"]

    dups = stats["duplicates"]
    kills = sum(1 for r in runs if r[2] == "SIGKILL")
    print(
        f"{args.jobs} jobs, {kills} SIGKILLs at random moments "
        f"({args.min_delay}-{args.max_delay}s into each run), seed {args.seed}; faults: "
        "create 5xx 3% (after store), GET 5xx 3%, downloads cut 5%; "
        f"every {args.video_every}th job a {args.video_size} B video; "
        f"output_salt flipped {len(salts) - 1} times; "
        f"{'no overlapping runs' if args.no_overlap else 'a second run 0.2 s into each run'}"
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
                ["corrupt vs fresh emulator download (any salt used)", corrupt_vs_emulator, "0"],
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
                ["overlapping runs refused (exit 2, holder named)", overlaps_refused, ""],
                ["overlapping runs that ran after the first ended", overlaps_ran, ""],
                ["overlapping runs that ran beside a live holder", overlaps_wrong, "0"],
                ["runs refused by a killed run's lock (stale)", stale_refusals, "0"],
                ["parts on disk at the kills (sum)", parts_at_kills, ""],
                ["parts resumed (download.resumed)", events["download.resumed"], ""],
                ["parts discarded (download.part_discarded)", discarded, ""],
                ["parts replaced, If-Range refused (download.part_replaced)", replaced, ""],
            ],
            title="Crash harness",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
