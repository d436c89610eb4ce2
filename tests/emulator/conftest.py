"""Fixtures for driving the emulator with the unmodified replicate client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import replicate

from engine.emulator import EmulatorServer


@pytest.fixture
def client(replicate_env: EmulatorServer) -> Iterator[replicate.Client]:
    """Return a client configured only by the environment, polling every 10 ms."""
    c = replicate.Client()
    c.poll_interval = 0.01
    yield c
    c._client.close()  # the client never closes its pool itself
