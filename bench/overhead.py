"""Engine overhead: client CPU seconds per job, engine vs a bare loop of the same calls.

Zero model time, generous limits on both sides, the same poll interval and concurrency.
Each contender runs in its own client subprocess against its own fresh emulator
subprocess; the client measures `time.process_time()` (user + system CPU of its own
process, every thread) around the batch only, so imports and the emulator's CPU are
excluded. The bare loop is what a user would write with the official client:

    async with sem:
        p = await client.predictions.async_create(model=..., input=...)
        await p.async_wait()                           # polls at the same interval
        for url in p.output: write(await httpx.get(url))  # download to a file

The engine also journals every step (with fsync group commits), verifies sizes and
sha256 of files, and paces two budgets: that is the overhead being measured.

    python bench/overhead.py                 # 5,000 jobs x 3 rounds, ~4 min
    python bench/overhead.py --jobs 1000 --rounds 5
    git worktree add /tmp/before <commit>    # then, to see what a change did:
    python bench/overhead.py --earlier /tmp/before

The machine is shared and noisy, so contenders alternate within each round, and the
verdict is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    HUGE,
    add_child_arguments,
    child_argv,
    emulator,
    flux_jobs,
    instant_knobs,
    run_child,
    table,
    tempdir,
    write_jsonl,
)

CONTENDERS = ("bare", "engine")


async def child_engine(args: argparse.Namespace, manifest: Path, out: Path) -> dict[str, Any]:
    from engine import ApiConfig, EngineConfig, run_jobs  # noqa: PLC0415
    from engine._logs import configure_logging  # noqa: PLC0415
    from jobs import read_manifest  # noqa: PLC0415

    configure_logging(json=True, file=None)
    config = EngineConfig(
        api=ApiConfig.from_env(),
        output_dir=out,
        concurrency=args.concurrency,
        create_rate=HUGE,
        read_rate=HUGE,
        poll_interval=args.poll,
    )
    summary = await run_jobs(lambda: read_manifest(manifest), config)
    data = summary.to_json()
    return {"failed": int(data.get("failed", 0) or 0)}


async def child_bare(args: argparse.Namespace, manifest: Path, out: Path) -> dict[str, Any]:
    import httpx  # noqa: PLC0415
    import replicate  # noqa: PLC0415

    os.environ["REPLICATE_POLL_INTERVAL"] = str(args.poll)
    client = replicate.Client()
    client.poll_interval = args.poll
    out.mkdir(parents=True, exist_ok=True)
    sem = asyncio.Semaphore(args.concurrency)
    jobs = [json.loads(line) for line in manifest.read_text().splitlines()]
    failed = 0
    errors: list[str] = []
    auth = {"Authorization": f"Bearer {os.environ['REPLICATE_API_TOKEN']}"}
    async with httpx.AsyncClient(timeout=60, headers=auth) as http:

        async def one(job: dict[str, Any]) -> None:
            nonlocal failed
            async with sem:
                try:
                    p = await client.predictions.async_create(
                        model=job["model"], input=job["input"]
                    )
                    await p.async_wait()  # polls at client.poll_interval
                    outputs = p.output if isinstance(p.output, list) else [p.output]
                    for i, url in enumerate(outputs):
                        path = out / f"{job['id']}_{i}{Path(url).suffix}"
                        async with http.stream("GET", url) as r:
                            r.raise_for_status()
                            with path.open("wb") as f:
                                async for chunk in r.aiter_bytes():
                                    f.write(chunk)
                except Exception as exc:
                    failed += 1
                    errors.append(repr(exc)[:300])

        await asyncio.gather(*(one(j) for j in jobs))
    return {"failed": failed, "first_error": errors[0] if errors else None}


def child_main(args: argparse.Namespace) -> None:
    manifest, out = Path(args.manifest), Path(args.out)
    fn = child_engine if args.child == "engine" else child_bare
    cpu0, t0 = time.process_time(), time.monotonic()
    result = asyncio.run(fn(args, manifest, out))
    result.update(cpu=time.process_time() - cpu0, wall=time.monotonic() - t0)
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--poll", type=float, default=0.05, help="poll interval, both sides")
    parser.add_argument("--rounds", type=int, default=3, help="alternate contenders N times")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--earlier",
        type=Path,
        help="also run the engine of this checkout (e.g. a git worktree) in the same rounds",
    )
    add_child_arguments(parser, CONTENDERS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return 0

    work = tempdir("overhead")
    manifest = write_jsonl(work / "jobs.jsonl", flux_jobs(args.jobs))
    # contender -> (script, child): "earlier" is the engine child of the other checkout.
    runs = {name: (__file__, name) for name in CONTENDERS}
    if args.earlier is not None:
        runs["earlier"] = (str(args.earlier.resolve() / "bench" / "overhead.py"), "engine")
    names = list(runs)
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in names}
    for r in range(args.rounds):
        # Alternate who goes first: the machine's load drifts within a round.
        for name in names if r % 2 == 0 else names[::-1]:
            script, child = runs[name]
            with emulator(instant_knobs(), work / f"{name}{r}") as emu:
                res = run_child(
                    child_argv(
                        script,
                        child,
                        manifest,
                        work / f"{name}{r}" / "out",
                        poll=args.poll,
                        concurrency=args.concurrency,
                    ),
                    emu.env(),
                    args.timeout,
                )
                if res.get("first_error"):
                    print(f"{name}: first failure: {res['first_error']}", file=sys.stderr)
                res["requests"] = sum(emu.stats()["requests"].values())
                results[name].append(res)
    rows = []
    for name in names:
        for res in results[name]:
            rows.append(
                [
                    name,
                    res["cpu"],
                    res["cpu"] / args.jobs * 1000,
                    res["requests"],
                    res["failed"],
                    res["wall"],
                ]
            )
    ratios = [e["cpu"] / b["cpu"] for e, b in zip(results["engine"], results["bare"], strict=True)]
    print(
        f"{args.jobs} jobs, zero model time, concurrency {args.concurrency}, "
        f"poll {args.poll}s, {args.rounds} round(s)"
    )
    print(
        table(
            ["contender", "client CPU s", "CPU ms/job", "HTTP requests", "failed", "wall s"],
            rows,
            title="Engine overhead",
        )
    )
    print()
    print(
        "engine/bare CPU ratio per round: "
        + ", ".join(f"{x:.2f}" for x in ratios)
        + f"; median {statistics.median(ratios):.2f}  (target <= 1.5)"
    )
    if args.earlier is not None:
        for top, bottom in (("earlier", "bare"), ("engine", "earlier")):
            pairs = zip(results[top], results[bottom], strict=True)
            per_round = [a["cpu"] / b["cpu"] for a, b in pairs]
            print(
                f"{top}/{bottom} CPU ratio per round: "
                + ", ".join(f"{x:.2f}" for x in per_round)
                + f"; median {statistics.median(per_round):.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
