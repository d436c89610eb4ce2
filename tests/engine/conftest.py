"""Fixtures for the gateway and downloader tests: a slower emulator and its API config."""

from __future__ import annotations

from typing import Any

import pytest

from engine import ApiConfig
from tests.support import api_config


@pytest.fixture
def server(emulator_server: Any) -> Any:
    """Return the emulator with predictions slow enough to observe (about 20 ms)."""
    emulator_server.emulator.update(time_scale=0.02)
    return emulator_server


@pytest.fixture
def api(server: Any) -> ApiConfig:
    """Return the API config pointing at ``server``."""
    return api_config(server)
