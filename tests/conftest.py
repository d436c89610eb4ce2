"""Shared fixtures: the anyio backend and a fresh HTTPS emulator per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.emulator import EmulatorConfig, EmulatorServer

# Timings shrink 100x (a prediction takes ~10 ms); webhook retries wait milliseconds.
FAST_CONFIG = EmulatorConfig(time_scale=0.01, webhook_retry_delays=(0.01, 0.02, 0.05))


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio only (the engine's backend)."""
    return "asyncio"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Return the emulator's config; override this fixture in a module to change it."""
    return FAST_CONFIG


@pytest.fixture
def emulator_server(emulator_config: EmulatorConfig, tmp_path: Path) -> Iterator[EmulatorServer]:
    """Serve a fresh emulator over HTTPS on loopback for one test."""
    with EmulatorServer(emulator_config, ca_file=tmp_path / "emulator-ca.pem") as server:
        yield server


@pytest.fixture
def replicate_env(
    emulator_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> EmulatorServer:
    """Point the replicate client's environment at the emulator and return the server."""
    monkeypatch.setenv("REPLICATE_BASE_URL", emulator_server.base_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", emulator_server.token)
    monkeypatch.setenv("SSL_CERT_FILE", str(emulator_server.ca_file))
    return emulator_server
