"""Read budget with many predictions in flight: reads per minute, 429s, completion lag.

N predictions (default 1,000) run R seconds each (default 60) at once, against a read
budget of 3,000/min (Replicate's). Contenders, each in its own client subprocess against
its own fresh emulator subprocess:

  engine   `engine.run_jobs` with read_rate = the budget (its PollPacer shares it)
  client   replicate's own `async_wait`, polling every 0.5 s per prediction

For every prediction the child records when it *noticed* the end (the engine's
``succeeded`` event, or `async_wait` returning); the parent reads each prediction's
``completed_at`` from the emulator and reports the lag p50/p95. Reads per minute are
the emulator's answered ``predictions.get`` over the polling window.

    python bench/polling.py                          # 1,000 x 60 s, ~3 min
    python bench/polling.py --jobs 100 1000 3000 --run-seconds 20 --earlier /tmp/before

``engine`` now sweeps the prediction list when many are in flight (engine/_sweep.py);
``--earlier`` runs another checkout's engine at every size, side by side. Reads are the
emulator's answered ``predictions.get`` plus ``predictions.list`` over the child's run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    FLUX,
    add_child_arguments,
    child_argv,
    emulator,
    flux_jobs,
    run_child,
    table,
    tempdir,
    write_jsonl,
)

CONTENDERS = ("engine", "client")


def knobs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "create_rate_per_min": 1_000_000,
        "create_burst": 100_000,
        "read_rate_per_min": args.read_budget,
        "read_burst": max(1, int(args.read_budget / 60)),  # one second's worth
        "model_timings": {FLUX: {"cold_start": 0.0, "run_time": args.run_seconds}},
    }


async def child_engine(args: argparse.Namespace) -> dict[str, Any]:
    from engine import ApiConfig, EngineConfig, JobEventKind, read_manifest, run_jobs  # noqa: PLC0415
    from engine._logs import configure_logging  # noqa: PLC0415

    configure_logging(json=True, file=Path(args.out) / "engine.log")
    noticed: dict[str, float] = {}

    def on_event(event: Any) -> None:
        if event.kind is JobEventKind.SUCCEEDED and event.prediction_id:
            noticed[event.prediction_id] = time.time()

    config = EngineConfig(
        api=ApiConfig.from_env(),
        output_dir=Path(args.out),
        concurrency=args.jobs,
        create_rate=1_000_000.0,
        read_rate=args.read_budget,
    )
    manifest = Path(args.manifest)
    summary = await run_jobs(lambda: read_manifest(manifest), config, on_event=on_event)
    return {"noticed": noticed, "failed": summary.failed}


async def child_client(args: argparse.Namespace) -> dict[str, Any]:
    import replicate  # noqa: PLC0415

    client = replicate.Client()
    client.poll_interval = 0.5
    jobs = [json.loads(line) for line in Path(args.manifest).read_text().splitlines()]
    noticed: dict[str, float] = {}
    failed = 0

    async def one(job: dict[str, Any]) -> None:
        nonlocal failed
        try:
            p = await client.predictions.async_create(model=job["model"], input=job["input"])
            await p.async_wait()
            noticed[p.id] = time.time()
        except Exception:
            failed += 1

    await asyncio.gather(*(one(j) for j in jobs))
    return {"noticed": noticed, "failed": failed}


def completed_at(emu: Any) -> dict[str, float]:
    """Read every prediction's completion time from the emulator (newest first, paged)."""
    out: dict[str, float] = {}
    with emu.client() as http:
        url: str | None = f"{emu.base_url}/v1/predictions"
        while url:
            page = http.get(url, headers={"Authorization": "Bearer r8_emulator_token"})
            if page.status_code == 429:
                time.sleep(float(page.headers.get("retry-after", "1")))
                continue
            body = page.json()
            for p in body["results"]:
                if p.get("completed_at"):
                    ts = datetime.fromisoformat(p["completed_at"].replace("Z", "+00:00"))
                    out[p["id"]] = ts.timestamp()
            url = body.get("next")
    return out


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    args: argparse.Namespace, work: Path, jobs: int, name: str, script: str, child: str
) -> list[object]:
    """Run one contender with ``jobs`` in flight against a fresh emulator; return its row."""
    manifest = work / f"jobs-{jobs}.jsonl"
    if not manifest.exists():
        write_jsonl(manifest, flux_jobs(jobs))
    out = work / f"{name}-{jobs}"
    out.mkdir(parents=True)
    with emulator(knobs(args), out / "emu") as emu:
        res = run_child(
            child_argv(
                script,
                child,
                manifest,
                out,
                jobs=jobs,
                read_budget=args.read_budget,
                run_seconds=args.run_seconds,
            ),
            emu.env(),
            args.timeout,
        )
        stats = emu.stats()
        done_at = completed_at(emu)
    lags = [res["noticed"][p] - done_at[p] for p in res["noticed"] if p in done_at]
    requests = stats["requests"]
    gets = sum(n for k, n in requests.items() if k.startswith("predictions.get "))
    lists = sum(n for k, n in requests.items() if k.startswith("predictions.list "))
    window_min = (res["ended"] - res["started"]) / 60.0
    reads_per_min = (gets + lists) / window_min if window_min > 0 else float("nan")
    return [
        jobs,
        name,
        f"{reads_per_min:,.0f}",
        f"{reads_per_min / args.read_budget:.2f}",
        gets,
        lists,
        stats["throttled"],
        len(res["noticed"]),
        res["failed"],
        round(quantile(lags, 0.5), 2),
        round(quantile(lags, 0.95), 2),
        round(res["ended"] - res["started"], 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1000], help="in flight (sizes)")
    parser.add_argument("--run-seconds", type=float, default=60.0)
    parser.add_argument("--read-budget", type=float, default=3000.0, help="reads per minute")
    parser.add_argument("--contenders", nargs="+", default=["engine"], choices=CONTENDERS)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--earlier",
        type=Path,
        help="also run the engine of this checkout (e.g. a git worktree) at every size",
    )
    add_child_arguments(parser, CONTENDERS)
    args = parser.parse_args(argv)
    if args.child:
        args.jobs = args.jobs[0]
        fn = child_engine if args.child == "engine" else child_client
        t0 = time.time()
        result = asyncio.run(fn(args))
        result.update(started=t0, ended=time.time())
        print(json.dumps(result))
        return 0

    work = tempdir("polling")
    runs = {name: (__file__, name) for name in args.contenders}
    if args.earlier is not None:
        runs["earlier"] = (str(args.earlier.resolve() / "bench" / "polling.py"), "engine")
    rows: list[list[object]] = []
    for jobs in args.jobs:
        for name, (script, child) in runs.items():
            rows.append(measure(args, work, jobs, name, script, child))
    print(
        f"{', '.join(f'{j:,}' for j in args.jobs)} predictions x {args.run_seconds:g} s "
        f"at once, read budget {args.read_budget:g}/min"
    )
    print(
        table(
            [
                "in flight",
                "contender",
                "reads/min",
                "reads / budget",
                "GETs",
                "list pages",
                "429s",
                "noticed",
                "failed",
                "lag p50 s",
                "lag p95 s",
                "wall s",
            ],
            rows,
            title="Read budget with many in flight (target: <= 0.95 of budget, 0 429s, "
            "lag p95 <= 2 s)",
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
