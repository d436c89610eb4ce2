"""Create throughput vs the limit: the engine against the loops a user would write.

Each contender runs in its own client subprocess against its own fresh emulator
subprocess, configured with the same create budget (scaled: 6,000/min by default instead
of Replicate's 600/min, so the run is short; the ratio is what counts) and a *small*
create burst, so any pacing that outruns the budget is answered with real 429s.

Contenders:
  engine     `engine.run_jobs` with create_rate = the budget
  gather     `asyncio.gather` over `replicate.Client.async_run` for every job at once
  semaphore  `async_run` under an `asyncio.Semaphore(concurrency)`

Reported: creates/min in the steady state (the middle 80% of create timestamps, taken
client-side from successful create responses) as % of the budget, 429s the emulator
answered, predictions created, jobs that failed.

    python bench/throughput.py              # 2,000 jobs at 6,000/min, ~2 min
    python bench/throughput.py --budget 600   # Replicate's own limit, unscaled: ~4 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    add_child_arguments,
    child_argv,
    creates_per_min,
    emulator,
    flux_jobs,
    run_child,
    table,
    tempdir,
    write_jsonl,
)

CONTENDERS = ("engine", "gather", "semaphore")


def emulator_knobs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "create_rate_per_min": args.budget,
        "create_burst": args.burst,
        # Replicate's read budget is 5x the create budget; keep that ratio when scaling.
        "read_rate_per_min": args.budget * 5,
        "read_burst": args.burst * 5,
        "time_scale": 1.0,
        "model_timings": {
            "black-forest-labs/flux-schnell": {"cold_start": 0.5, "run_time": args.model_seconds}
        },
    }


# --------------------------------------------------------------------------- children


async def child_engine(args: argparse.Namespace, manifest: Path, out: Path) -> dict[str, Any]:
    from engine import ApiConfig, EngineConfig, run_jobs  # noqa: PLC0415
    from engine._events import JobEventKind  # noqa: PLC0415
    from jobs import read_manifest  # noqa: PLC0415

    created: list[float] = []

    def on_event(event: Any) -> None:
        if event.kind == JobEventKind.CREATED:
            created.append(time.monotonic())

    config = EngineConfig(
        api=ApiConfig.from_env(),
        output_dir=out,
        concurrency=args.concurrency,
        create_rate=args.budget,
        read_rate=args.budget * 5,
        poll_interval=0.5,
    )
    summary = await run_jobs(lambda: read_manifest(manifest), config, on_event=on_event)
    data = summary.to_json()
    failed = int(data.get("failed", 0) or 0)
    return {"created": created, "failed": failed, "client_429": data.get("throttled_429")}


async def child_replicate(args: argparse.Namespace, manifest: Path, mode: str) -> dict[str, Any]:
    import replicate  # noqa: PLC0415

    created: list[float] = []
    throttled = 0

    async def hook(response: Any) -> None:
        nonlocal throttled
        if response.request.method == "POST" and response.request.url.path.endswith("/predictions"):
            if response.status_code == 201:
                created.append(time.monotonic())
            elif response.status_code == 429:
                throttled += 1

    client = replicate.Client(event_hooks={"response": [hook]})
    jobs = [json.loads(line) for line in manifest.read_text().splitlines()]
    sem = asyncio.Semaphore(args.concurrency)

    async def one(job: dict[str, Any]) -> None:
        outputs = await client.async_run(job["model"], input=job["input"])
        for item in outputs:
            await item.aread()  # download, like the engine does

    async def bounded(job: dict[str, Any]) -> None:
        async with sem:
            await one(job)

    run = one if mode == "gather" else bounded
    results = await asyncio.gather(*(run(j) for j in jobs), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    kinds: dict[str, int] = {}
    for e in errors:
        kind = type(e).__name__ + (" 429" if "429" in str(e) else "")
        kinds[kind] = kinds.get(kind, 0) + 1
    err429 = sum(1 for e in errors if "429" in str(e) or "throttl" in str(e).lower())
    return {
        "created": created,
        "failed": len(errors),
        "failed_429": err429,
        "client_429": throttled,
        "error_kinds": kinds,
        "first_error": repr(errors[0])[:200] if errors else None,
    }


def child_main(args: argparse.Namespace) -> None:
    manifest, out = Path(args.manifest), Path(args.out)
    t0 = time.monotonic()
    if args.child == "engine":
        result = asyncio.run(child_engine(args, manifest, out))
    else:
        result = asyncio.run(child_replicate(args, manifest, args.child))
    result["wall"] = time.monotonic() - t0
    print(json.dumps(result))


# --------------------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=6000.0, help="creates per minute")
    parser.add_argument("--burst", type=int, default=10, help="emulator create burst")
    parser.add_argument("--model-seconds", type=float, default=2.0, help="model run time")
    parser.add_argument("--concurrency", type=int, default=400)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--timeout", type=float, default=240.0, help="per contender, seconds")
    parser.add_argument(
        "--earlier",
        type=Path,
        help="also run the engine of this checkout (e.g. a git worktree), side by side",
    )
    add_child_arguments(parser, CONTENDERS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return 0

    work = tempdir("throughput")
    manifest = write_jsonl(work / "jobs.jsonl", flux_jobs(args.jobs))
    rows: list[list[object]] = []
    notes: list[str] = []
    runs = {name: (__file__, name) for name in args.contenders}
    if args.earlier is not None:
        runs["earlier"] = (str(args.earlier.resolve() / "bench" / "throughput.py"), "engine")
    for name, (script, child) in runs.items():
        with emulator(emulator_knobs(args), work / name) as emu:
            try:
                res = run_child(
                    child_argv(
                        script,
                        child,
                        manifest,
                        work / name / "out",
                        budget=args.budget,
                        concurrency=args.concurrency,
                    ),
                    emu.env(),
                    args.timeout,
                )
            except RuntimeError:  # run_child showed the child's stderr
                rows.append([name, "crashed", "", "", "", "", ""])
                continue
            stats = emu.stats()
        rate = creates_per_min(res["created"])
        by_call = {k: v for k, v in stats["requests"].items() if k.endswith(" 429")}
        if by_call:
            notes.append(f"{name}: 429s by call {by_call}")
        if res.get("error_kinds"):
            notes.append(
                f"{name}: failures by kind {res['error_kinds']}; first: {res['first_error']}"
            )
        rows.append(
            [
                name,
                rate,
                f"{rate / args.budget * 100:.1f}%",
                stats["throttled"],
                stats["predictions_created"],
                res["failed"],
                res["wall"],
            ]
        )
    print(
        f"{args.jobs} jobs, budget {args.budget:.0f} creates/min (burst {args.burst}), "
        f"model {args.model_seconds}s + 0.5s cold start, concurrency {args.concurrency}"
    )
    print(
        table(
            [
                "contender",
                "creates/min (steady)",
                "% of budget",
                "429s at emulator",
                "predictions created",
                "jobs failed",
                "wall s",
            ],
            rows,
            title="Create throughput vs the limit",
        )
    )
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
