"""Emulate the Replicate HTTP API locally, faithfully enough for the unmodified client.

`Emulator` is the ASGI app and its state, `EmulatorConfig` its knobs, and
`EmulatorServer` serves it over HTTPS on loopback with a throwaway CA.
"""

from engine.emulator.app import Emulator
from engine.emulator.config import EmulatorConfig
from engine.emulator.server import EmulatorServer

__all__ = ["Emulator", "EmulatorConfig", "EmulatorServer"]
