"""Downloads: one large output over loopback HTTPS, engine `Downloader` vs curl vs httpx.

A fresh emulator subprocess serves a kling-video output of ``--size`` bytes (the
emulator's ``video_size`` knob). One prediction is created and awaited, then the same
output URL is fetched by each contender, in alternating order for ``--rounds`` rounds:

  engine   `engine._download.Downloader.fetch` (part file, sha256 while streaming, fsync,
           rename) in a child process
  curl     ``curl -o FILE`` (when installed): the target's yardstick
  curl+sha256+sync  ``curl -o FILE && sha256sum FILE && sync FILE``: curl doing the same
           work the engine does (verify and make durable), timed as one
  httpx-async  a plain `httpx.AsyncClient.stream` loop writing to a file, in a child:
           what an asyncio program gets from httpx (asyncio's SSL transport is the limit)
  httpx-sync  a blocking `httpx.Client` stream that only reads: the network path alone
  httpx-sync+sha+fsync  a blocking `httpx.Client` stream with sha256 and one fsync: the
           engine's work without the engine, to attribute its own cost
  2threads+sha+fsync  the same work split over two threads, one reading the network and
           one hashing and writing (hashlib and os.write release the GIL): whether the
           idle core can take the work

Reported: MB/s per contender, the engine's throughput as a ratio of curl's in the same
round, and the Python children's RSS growth during the download (ru_maxrss after minus RSS
before the download starts, so imports and TLS setup are excluded). CPU seconds of the
client (the child process around the download, or curl and its helpers) and of the
emulator, and how busy both kept the machine's cores: where the time goes when the
server shares the machine.

    python bench/download.py                  # 256 MB, 2 rounds
    python bench/download.py --size-mb 1024
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import TOKEN, VIDEO, emulator, run_child, table, tempdir


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def child_engine(url: str, dest: Path) -> None:
    from engine import ApiConfig  # noqa: PLC0415
    from engine._download import Downloader  # noqa: PLC0415

    async with Downloader(ApiConfig.from_env()) as downloader:
        await downloader.fetch(url, dest)


async def child_httpx_async(url: str, dest: Path) -> None:
    import httpx  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {os.environ['REPLICATE_API_TOKEN']}"}
    async with (
        httpx.AsyncClient(timeout=60, headers=headers) as client,
        client.stream("GET", url) as r,
    ):
        r.raise_for_status()
        with dest.open("wb") as f:
            async for chunk in r.aiter_raw():
                f.write(chunk)


@contextmanager
def sync_chunks(url: str) -> Iterator[Iterator[bytes]]:
    """Yield the raw chunks of a blocking `httpx.Client` GET of ``url`` (checked 2xx)."""
    import httpx  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {os.environ['REPLICATE_API_TOKEN']}"}
    with httpx.Client(timeout=60, headers=headers) as client, client.stream("GET", url) as r:
        r.raise_for_status()
        yield r.iter_raw()


def child_httpx_read(url: str, dest: Path) -> None:
    size = 0
    with sync_chunks(url) as chunks:
        for chunk in chunks:
            size += len(chunk)
    # A sparse file of the size read (no bytes written): main checks every contender's size.
    dest.touch()
    os.truncate(dest, size)


def child_httpx_sync(url: str, dest: Path) -> None:
    with sync_chunks(url) as chunks:
        digest = hashlib.sha256()
        with dest.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
            f.flush()
            os.fsync(f.fileno())


def child_two_threads(url: str, dest: Path) -> None:
    import queue  # noqa: PLC0415
    import threading  # noqa: PLC0415

    batches: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=8)

    def hash_and_write() -> None:
        digest = hashlib.sha256()
        with dest.open("wb", buffering=0) as f:
            while (batch := batches.get()) is not None:
                for chunk in batch:
                    digest.update(chunk)
                    f.write(chunk)
            os.fsync(f.fileno())

    writer = threading.Thread(target=hash_and_write)
    writer.start()
    with sync_chunks(url) as chunks:
        batch: list[bytes] = []
        for chunk in chunks:
            batch.append(chunk)
            if len(batch) == 16:  # 1 MiB per handoff
                batches.put(batch)
                batch = []
        batches.put(batch)
        batches.put(None)
    writer.join()


def child_main(kind: str, url: str, dest: Path) -> None:
    import httpx  # noqa: F401, PLC0415

    import engine._download  # noqa: F401, PLC0415 - imports before the baseline RSS

    before = rss_now_mb()
    t0, cpu0 = time.monotonic(), time.process_time()
    if kind == "engine":
        asyncio.run(child_engine(url, dest))
    elif kind == "httpx-async":
        asyncio.run(child_httpx_async(url, dest))
    elif kind == "httpx-sync":
        child_httpx_read(url, dest)
    elif kind == "2threads+sha+fsync":
        child_two_threads(url, dest)
    else:
        child_httpx_sync(url, dest)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"wall": wall, "cpu": cpu, "rss_growth": peak - before}
    print(json.dumps({**result, "size": dest.stat().st_size}))


def process_cpu(pid: int) -> float:
    """Return the CPU seconds (user + system) process ``pid`` has used; nan off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_output(emu: Any, timeout: float = 120.0) -> str:
    """Create one video prediction, wait for it, return its output URL."""
    with emu.client(headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        r = c.post(
            f"{emu.base_url}/v1/models/{VIDEO}/predictions",
            json={"input": {"prompt": "a long take"}},
        )
        r.raise_for_status()
        pid = r.json()["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = c.get(f"{emu.base_url}/v1/predictions/{pid}").json()
            if p["status"] == "succeeded":
                out = p["output"]
                return out[0] if isinstance(out, list) else out
            if p["status"] in ("failed", "canceled"):
                raise RuntimeError(f"prediction {p['status']}: {p.get('error')}")
            time.sleep(0.2)
    raise TimeoutError("prediction did not finish")


PYTHON_CONTENDERS = (
    "engine",
    "httpx-async",
    "httpx-sync",
    "httpx-sync+sha+fsync",
    "2threads+sha+fsync",
)


AUTH = f"Authorization: Bearer {TOKEN}"


def run_curl(curl: str, url: str, dest: Path, ca_file: Path, *, verify: bool) -> dict[str, Any]:
    """Time curl alone, or curl followed by sha256sum and a sync of the file."""
    t0, before = time.monotonic(), os.times()
    subprocess.run(
        [curl, "-sS", "--fail", "-o", str(dest), "--cacert", str(ca_file), "-H", AUTH, url],
        check=True,
        timeout=600,
    )
    if verify:
        subprocess.run(["sha256sum", str(dest)], check=True, capture_output=True, timeout=600)
        subprocess.run(["sync", str(dest)], check=True, timeout=600)
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user
    return {
        "wall": time.monotonic() - t0,
        "cpu": cpu - before.children_system,
        "rss_growth": float("nan"),
        "size": dest.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=PYTHON_CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.url, Path(args.dest))
        return 0

    work = tempdir("download")
    size = args.size_mb * 1024 * 1024
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed: it is this benchmark's yardstick")
    contenders = [*PYTHON_CONTENDERS, "curl", "curl+sha256+sync"]
    rows: list[list[Any]] = []
    per_round: list[dict[str, float]] = []
    knobs = {"video_size": size, "time_scale": 0.1, "output_expiry": 36000.0}
    with emulator(knobs, work / "emu") as emu:
        url = create_output(emu)
        env = emu.env()
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else list(reversed(contenders))
            mbps: dict[str, float] = {}
            for name in order:
                dest = work / f"{name}-{r}.bin"
                emulator_cpu = process_cpu(emu.proc.pid)
                if name.startswith("curl"):
                    res = run_curl(curl, url, dest, emu.ca_file, verify=name != "curl")
                else:
                    res = run_child(
                        [__file__, "--child", name, "--url", url, "--dest", str(dest)], env, 600
                    )
                emulator_cpu = process_cpu(emu.proc.pid) - emulator_cpu
                if res["size"] != size:
                    raise SystemExit(f"{name}: got {res['size']} bytes, expected {size}")
                mbps[name] = size / 1e6 / res["wall"]
                growth = res["rss_growth"]
                busy = (res["cpu"] + emulator_cpu) / (res["wall"] * (os.cpu_count() or 1))
                rows.append(
                    [
                        r + 1,
                        name,
                        mbps[name],
                        res["wall"],
                        res["cpu"],
                        emulator_cpu,
                        f"{busy:.0%}",
                        "-" if growth != growth else f"{growth:.1f}",
                    ]
                )
                dest.unlink()
            per_round.append(mbps)
    print(
        f"{args.size_mb} MB output over loopback HTTPS, emulator in its own process, "
        f"{args.rounds} rounds (order alternates)"
    )
    print(
        table(
            [
                "round",
                "contender",
                "MB/s",
                "wall s",
                "client CPU s",
                "emulator CPU s",
                "cores busy",
                "RSS growth MB",
            ],
            rows,
            title="Download throughput",
        )
    )
    print()
    for base, note in (
        ("curl", "  (target >= 0.8; RSS growth <= 50 MB)"),
        ("httpx-sync", "  (the network path alone, no hash, no write)"),
        ("curl+sha256+sync", "  (the same verify + durable work)"),
        ("httpx-sync+sha+fsync", "  (the engine's own cost)"),
    ):
        ratios = ", ".join(f"{m['engine'] / m[base]:.2f}" for m in per_round)
        print(f"engine / {base} throughput per round: {ratios}{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
