"""Small helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine import ApiConfig, Secret


def api_config(server: Any) -> ApiConfig:
    """Return an `ApiConfig` that reaches ``server`` (an `EmulatorServer`)."""
    return ApiConfig(token=Secret(server.token), base_url=server.base_url, ca_file=server.ca_file)


def sha256_of(path: Path) -> str:
    """Hash a file independently of the code under test, reading it back from disk."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
