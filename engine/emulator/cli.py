"""Run the emulator from the command line until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from engine.emulator.config import EmulatorConfig
from engine.emulator.server import EmulatorServer

__all__ = ["build_parser", "serve_forever"]


def build_parser() -> argparse.ArgumentParser:
    """Return the ``emulator`` subcommand's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m engine emulator",
        description="Serve a local emulator of the Replicate HTTP API over HTTPS.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks any free port")
    parser.add_argument("--ca-file", help="write the CA certificate PEM here (for SSL_CERT_FILE)")
    parser.add_argument("--token", help="the API token to accept (default r8_emulator_token)")
    parser.add_argument("--config", help="a YAML or JSON file of emulator knobs")
    return parser


def serve_forever(argv: list[str] | None = None) -> int:
    """Serve until a signal arrives; print the base URL once connections are accepted."""
    args = build_parser().parse_args(argv)
    config = EmulatorConfig.from_file(args.config) if args.config else EmulatorConfig()
    if args.token:
        config = config.replace(token=args.token)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmulatorServer(config, ca_file=args.ca_file, host=args.host, port=args.port) as server:
            sys.stdout.write(server.base_url + "\n")
            sys.stdout.flush()
            # Event.wait with a timeout lets the main thread run signal handlers promptly.
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
