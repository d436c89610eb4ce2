"""Downloads: one large output over loopback HTTPS, engine `Downloader` vs curl vs httpx.

A fresh emulator subprocess serves a kling-video output of ``--size`` bytes (the
emulator's ``video_size`` knob). One prediction is created and awaited, then the same
output URL is fetched by each contender, in alternating order for ``--rounds`` rounds:

  engine   `engine.download.Downloader.fetch` (part file, sha256 while streaming, fsync,
           rename) in a child process
  curl     ``curl -o FILE`` (when installed)
  httpx    a plain `httpx.AsyncClient.stream` loop writing 256 KiB chunks, in a child
  httpx+sha+fsync  the same, plus sha256 of every chunk and one fsync at the end (what the
           engine adds for durability), to attribute the engine's cost

Reported: MB/s per contender, the engine's throughput as a ratio of curl's in the same
round, and the Python children's RSS growth during the download (ru_maxrss after minus RSS
before the download starts, so imports and TLS setup are excluded).

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import TOKEN, VIDEO, emulator, table, tempdir


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def child_engine(url: str, dest: Path) -> None:
    from engine import ApiConfig  # noqa: PLC0415
    from engine.download import Downloader  # noqa: PLC0415

    async with Downloader(ApiConfig.from_env()) as downloader:
        await downloader.fetch(url, dest)


async def child_httpx(url: str, dest: Path, *, durable: bool = False) -> None:

    import httpx  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {os.environ['REPLICATE_API_TOKEN']}"}
    async with (
        httpx.AsyncClient(timeout=60, headers=headers) as client,
        client.stream("GET", url) as r,
    ):
        r.raise_for_status()
        digest = hashlib.sha256()
        with dest.open("wb") as f:
            async for chunk in r.aiter_bytes(256 * 1024):
                f.write(chunk)
                if durable:
                    digest.update(chunk)
            if durable:
                f.flush()
                os.fsync(f.fileno())


def child_main(kind: str, url: str, dest: Path) -> None:
    import httpx  # noqa: F401, PLC0415

    import engine.download  # noqa: F401, PLC0415 - imports before the baseline RSS

    before = rss_now_mb()
    t0 = time.monotonic()
    if kind == "engine":
        asyncio.run(child_engine(url, dest))
    else:
        asyncio.run(child_httpx(url, dest, durable=kind == "httpx+sha+fsync"))
    wall = time.monotonic() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "rss_growth": peak - before, "size": dest.stat().st_size}))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--child", choices=("engine", "httpx", "httpx+sha+fsync"), help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.url, Path(args.dest))
        return 0

    work = tempdir("download")
    size = args.size_mb * 1024 * 1024
    curl = shutil.which("curl")
    contenders = ["engine", "httpx", "httpx+sha+fsync"] + (["curl"] if curl else [])
    rows, ratios, vs_python = [], [], []
    knobs = {"video_size": size, "time_scale": 0.1, "output_expiry": 36000.0}
    with emulator(knobs, work / "emu") as emu:
        url = create_output(emu)
        env = emu.env()
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else list(reversed(contenders))
            mbps: dict[str, float] = {}
            for name in order:
                dest = work / f"{name}-{r}.bin"
                if name == "curl":
                    t0 = time.monotonic()
                    subprocess.run(
                        [
                            curl,
                            "-sS",
                            "--fail",
                            "-o",
                            str(dest),
                            "--cacert",
                            str(emu.ca_file),
                            "-H",
                            f"Authorization: Bearer {TOKEN}",
                            url,
                        ],
                        check=True,
                        timeout=600,
                    )
                    res = {
                        "wall": time.monotonic() - t0,
                        "rss_growth": float("nan"),
                        "size": dest.stat().st_size,
                    }
                else:
                    proc = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            name,
                            "--url",
                            url,
                            "--dest",
                            str(dest),
                        ],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=600,
                        check=False,
                    )
                    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                    if not lines:
                        sys.stderr.write(proc.stderr[-2000:])
                        raise SystemExit(f"{name} failed")
                    res = json.loads(lines[-1])
                if res["size"] != size:
                    raise SystemExit(f"{name}: got {res['size']} bytes, expected {size}")
                mbps[name] = size / 1e6 / res["wall"]
                rows.append(
                    [
                        r + 1,
                        name,
                        mbps[name],
                        res["wall"],
                        "-" if name == "curl" else f"{res['rss_growth']:.1f}",
                    ]
                )
                dest.unlink()
            base = mbps.get("curl", mbps["httpx"])
            ratios.append(mbps["engine"] / base)
            vs_python.append(mbps["engine"] / mbps["httpx+sha+fsync"])
    print(
        f"{args.size_mb} MB output over loopback HTTPS, emulator in its own process, "
        f"{args.rounds} rounds (order alternates)"
    )
    print(
        table(
            ["round", "contender", "MB/s", "wall s", "RSS growth MB"],
            rows,
            title="Download throughput",
        )
    )
    print()
    print(
        f"engine / {'curl' if curl else 'httpx'} throughput per round: "
        + ", ".join(f"{x:.2f}" for x in ratios)
        + "  (target >= 0.8; RSS growth <= 50 MB)"
    )
    print(
        "engine / httpx+sha+fsync throughput per round: " + ", ".join(f"{x:.2f}" for x in vs_python)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
