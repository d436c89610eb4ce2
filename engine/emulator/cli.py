"""Run the emulator from the command line until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

import yaml

from engine.emulator.config import EmulatorConfig
from engine.emulator.server import EmulatorServer

__all__ = ["build_parser", "serve_forever"]

_MAX_PORT = 65535
_EXIT_USAGE = 2  # engine._report.EXIT_USAGE; the emulator imports nothing of the engine


def build_parser() -> argparse.ArgumentParser:
    """Return the ``emulator`` subcommand's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m engine emulator",
        description="Serve a local emulator of the Replicate HTTP API over HTTPS.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=0, help="0 picks any free port")
    parser.add_argument("--ca-file", help="write the CA certificate PEM here (for SSL_CERT_FILE)")
    parser.add_argument("--token", help="the API token to accept (default r8_emulator_token)")
    parser.add_argument("--config", help="a YAML or JSON file of emulator knobs")
    return parser


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= _MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be 0 to {_MAX_PORT}, got {text}")
    return port


def serve_forever(argv: list[str] | None = None) -> int:
    """Serve until a signal arrives; print the base URL once connections are accepted.

    A settings file that cannot be read or holds unknown knobs, or an address or CA file
    that cannot be used, is one ``error:`` line and exit 2, as everywhere in the CLI.
    """
    args = build_parser().parse_args(argv)
    try:
        config = EmulatorConfig.from_file(args.config) if args.config else EmulatorConfig()
    except OSError as exc:
        return _error(f"--config {args.config}: {exc.strerror or exc}")
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        return _error(f"--config {args.config}: {' '.join(str(exc).split())}")
    if args.token:
        config = config.replace(token=args.token)
    try:
        return _serve(config, args)
    except BrokenPipeError:
        raise  # the reader of the URL went away: the CLI's edge says so
    except OSError as exc:  # the port is taken, the CA file cannot be written
        what = f"write {exc.filename}" if exc.filename else f"serve on {args.host}:{args.port}"
        return _error(f"cannot {what}: {exc.strerror or exc}")


def _error(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return _EXIT_USAGE


def _serve(config: EmulatorConfig, args: argparse.Namespace) -> int:
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
