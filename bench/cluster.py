"""Scale-out over Redis: one create budget shared by 1, 2, 3 worker processes; downloads.

For each worker count a fresh emulator subprocess enforces the create budget (scaled:
1,200/min by default) with a small burst, so a cluster that outruns the budget is
answered with real 429s; ``python -m engine run --redis ... --workers N`` runs the
manifest against one fresh redis-server. Creates/min is measured over the steady state
(the middle 80%) of the ``created`` records the workers wrote to Redis, as a share of the
budget. Then download throughput: video outputs, instant predictions, no rate limit, for
1 vs 3 processes (hashing and writing use about one core per process).

    python bench/cluster.py                       # ~2 min on 2 cores
    python bench/cluster.py --seconds 60 --budget 600   # Replicate's own limit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    FLUX,
    HUGE,
    PY,
    ROOT,
    VIDEO,
    creates_per_min,
    emulator,
    flux_jobs,
    table,
    tempdir,
    write_jsonl,
)
from tests.cluster.redis_server import RedisServer


def run_cluster(
    emu: Any, redis: RedisServer, run: str, manifest: Path, out: Path, workers: int, *flags: str
) -> float:
    """Run the manifest with ``workers`` processes; return the wall time in seconds."""
    argv = [PY, "-m", "engine", "run", str(manifest), "--output-dir", str(out),
            "--redis", redis.url, "--run", run, "--workers", str(workers), *flags]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=ROOT, env=emu.env(), capture_output=True, text=True, check=False, timeout=900
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise RuntimeError(f"run {run} exited {done.returncode}")
    return wall


def created_times(redis: RedisServer, run: str) -> list[float]:
    """Return the client timestamps of every ``created`` record of ``run`` in Redis."""
    import redis as redis_py  # noqa: PLC0415

    client = redis_py.Redis.from_url(redis.url)
    times = []
    for key in client.scan_iter(f"engine:run:{run}:rec:*", count=1000):
        for line in client.lrange(key, 0, -1):
            record = json.loads(line)
            if record["e"] == "created":
                times.append(float(record["ts"]))
    client.close()
    return times


def creates_case(args: argparse.Namespace, redis: RedisServer, workers: int) -> list[Any]:
    jobs = int(args.budget / 60 * args.seconds)
    work = tempdir(f"cluster-creates-{workers}")
    knobs = {
        "create_rate_per_min": args.budget,
        "create_burst": args.burst,
        "read_rate_per_min": args.budget * 5,
        "read_burst": args.burst * 5,
        "model_timings": {FLUX: {"cold_start": 0.2, "run_time": 1.0}},
    }
    manifest = write_jsonl(work / "m.jsonl", flux_jobs(jobs, prefix=f"w{workers}-"))
    with emulator(knobs, work) as emu:
        run = f"creates-{workers}-{time.monotonic_ns()}"
        run_cluster(
            emu, redis, run, manifest, work / "out", workers,
            "--rate-limit", str(args.budget), "--read-rate-limit", str(args.budget * 5),
            "--concurrency", str(args.concurrency), "--poll-interval", "0.2",
        )  # fmt: skip
        stats = emu.stats()
    rate = creates_per_min(created_times(redis, run))
    return [workers, jobs, rate, rate / args.budget, stats["throttled"],
            stats["predictions_created"], len(stats["duplicates"])]  # fmt: skip


def download_case(args: argparse.Namespace, redis: RedisServer, workers: int) -> list[Any]:
    work = tempdir(f"cluster-downloads-{workers}")
    knobs = {
        "create_rate_per_min": HUGE,
        "create_burst": 1_000_000,
        "read_rate_per_min": HUGE,
        "read_burst": 1_000_000,
        "video_size": args.video_mb * 1024 * 1024,
        "model_timings": {VIDEO: {"cold_start": 0.0, "run_time": 0.0}},
        "output_expiry": 36000.0,
    }
    jobs = [
        {"id": f"v{i:04d}", "model": VIDEO, "input": {"prompt": f"video {i}"}}
        for i in range(args.videos)
    ]
    manifest = write_jsonl(work / "m.jsonl", jobs)
    with emulator(knobs, work) as emu:
        run = f"downloads-{workers}-{time.monotonic_ns()}"
        wall = run_cluster(
            emu, redis, run, manifest, work / "out", workers,
            "--rate-limit", str(HUGE), "--read-rate-limit", str(HUGE), "--concurrency", "4",
        )  # fmt: skip
        served = emu.stats()["bytes_served"]
    return [workers, args.videos, served / 1e6, wall, served / 1e6 / wall]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=1200.0, help="creates per minute")
    parser.add_argument("--burst", type=int, default=10, help="emulator create burst")
    parser.add_argument("--seconds", type=float, default=15.0, help="target run length")
    parser.add_argument("--concurrency", type=int, default=100, help="per worker process")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--video-mb", type=int, default=16)
    args = parser.parse_args()

    redis = RedisServer(tempdir("cluster-redis"))
    redis.start()
    try:
        creates = [creates_case(args, redis, n) for n in args.workers]
        downloads = [download_case(args, redis, n) for n in (1, 3)]
    finally:
        redis.stop()
    print(
        table(
            ["processes", "jobs", "creates/min", "÷ budget", "429s", "created", "dup inputs"],
            creates,
            title=f"Shared create budget: {args.budget:.0f}/min, emulator burst {args.burst}",
        )
    )
    print()
    print(
        table(
            ["processes", "videos", "MB served", "wall s", "MB/s"],
            downloads,
            title=f"Downloads: {args.videos} videos of {args.video_mb} MB, instant predictions",
        )
    )


if __name__ == "__main__":
    main()
