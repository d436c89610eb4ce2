"""Fixtures of the cluster tests: a real, durable redis-server per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Start redis-server on a free loopback port (AOF, fsync always); stop it after.

    A machine without redis-server fails here: the tests need the real thing.
    """
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
