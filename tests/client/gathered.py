"""The seed's batch pattern at scale: N ``run_model_async`` gathered on one client.

The emulator allows creates at ``600 * scale`` per minute with a burst of 20, below the
demand of N at once; the client is given the same create budget (when it takes one).
Returns what the emulator saw: creates that succeeded, 429s, the peak creates in any
one-second window and TLS handshakes. ``tests/client/test_client_shared.py`` asserts on
it; run it as a script for the numbers::

    .venv/bin/python -m tests.client.gathered --n 200 --scale 10

Run from a checkout of the code before ef973b1 (the same script copied in) for the
numbers of the client that opened a gateway per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from engine import ReplicateClient
from engine.emulator import EmulatorConfig, EmulatorServer

FLUX = "black-forest-labs/flux-schnell"
EMULATOR_BURST = 20


def emulator_config(scale: float) -> EmulatorConfig:
    """Return an emulator whose create limit is below a gathered batch's demand."""
    return EmulatorConfig(
        time_scale=0.01,
        create_rate_per_min=600.0 * scale,
        create_burst=EMULATOR_BURST,
        read_rate_per_min=3000.0 * scale,
        read_burst=int(3000 * scale),
    )


def make_client(scale: float) -> ReplicateClient:
    """Return a client with Replicate's budgets scaled like the emulator's limits."""
    try:
        return ReplicateClient(  # type: ignore[call-arg,unused-ignore]
            poll_interval=0.02, create_rate=600.0 * scale, read_rate=3000.0 * scale
        )
    except TypeError:  # a client from before budgets were shared takes no rates
        return ReplicateClient(poll_interval=0.02)


def peak_per_second(times: list[float]) -> int:
    """Return the most creates stored within any one-second window."""
    times = sorted(times)
    peak, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


async def gather(client: ReplicateClient, n: int) -> list[Any]:
    """Run the seed's example: ``asyncio.gather`` over ``run_model_async``."""
    tasks = [client.run_model_async(FLUX, {"prompt": f"gathered {i}"}) for i in range(n)]
    return await asyncio.gather(*tasks, return_exceptions=True)


def measure(server: EmulatorServer, client: ReplicateClient, n: int) -> dict[str, Any]:
    """Gather ``n`` runs on ``client`` and return the emulator's view of them."""
    started = time.monotonic()
    results = asyncio.run(gather(client, n))
    elapsed = time.monotonic() - started
    stats = server.emulator.stats.snapshot()
    errors = [r for r in results if isinstance(r, BaseException)]
    create_429 = sum(
        count
        for key, count in stats["requests"].items()
        if key.split(" ")[0].endswith("predictions.create") and key.endswith(" 429")
    )
    return {
        "runs": n,
        "succeeded": n - len(errors),
        "errors": sorted({type(e).__name__ for e in errors}),
        "predictions_created": stats["predictions_created"],
        "create_429s": create_429,
        "all_429s": stats["throttled"],
        "peak_creates_per_1s": peak_per_second([r.created for r in server.emulator.order]),
        "tls_handshakes": stats["tls_handshakes"],
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--scale", type=float, default=10.0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        config = emulator_config(args.scale)
        with EmulatorServer(config, ca_file=Path(tmp) / "ca.pem") as server:
            os.environ.update(
                REPLICATE_BASE_URL=server.base_url,
                REPLICATE_API_TOKEN=server.token,
                SSL_CERT_FILE=str(server.ca_file),
            )
            result = measure(server, make_client(args.scale), args.n)
            result["budget_creates_per_1s"] = 600.0 * args.scale / 60
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
