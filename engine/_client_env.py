"""Read a `ReplicateClient`'s settings: its arguments, else the environment, else defaults.

Environment (read when the client is built, never at import):
``REPLICATE_API_TOKEN`` (else ``REPLICATE_API_KEY``), ``REPLICATE_BASE_URL``,
``SSL_CERT_FILE``, ``REPLICATE_MAX_RETRIES`` (default 3), ``REPLICATE_TIMEOUT``
(default 600 s, the longest `wait_for_prediction` waits when given no timeout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine._config import MAX_SETTLE, SETTLE_SECONDS, ApiConfig, EngineConfig
from engine._errors import ConfigError

__all__ = ["POLL_INTERVAL", "Settings", "read_settings"]

POLL_INTERVAL = 0.5
_DEFAULT_MAX_RETRIES = 3
_DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """One client's settings, fixed when it is built."""

    api: ApiConfig
    max_retries: int
    timeout: float
    poll_interval: float
    create_rate: float = 600.0
    read_rate: float = 3000.0
    settle: float = SETTLE_SECONDS  # seconds before a lost create's absence is believed

    @property
    def engine(self) -> EngineConfig:
        """Return the engine settings the gateway and downloader are built from."""
        return EngineConfig(
            api=self.api,
            call_attempts=self.max_retries + 1,
            create_rate=self.create_rate,
            read_rate=self.read_rate,
            settle=self.settle,
        )


def read_settings(
    env: Mapping[str, str],
    *,
    api_token: str | None,
    base_url: str | None,
    max_retries: int | None,
    timeout: float | None,
    poll_interval: float,
    create_rate: float,
    read_rate: float,
    settle: float = SETTLE_SECONDS,
) -> Settings:
    """Return the client's settings; an argument given wins over the environment."""
    if create_rate <= 0 or read_rate <= 0:
        raise ConfigError("create_rate and read_rate must be positive requests per minute")
    if not 0 <= settle <= MAX_SETTLE:
        raise ConfigError(f"settle must be 0 to {MAX_SETTLE:g} seconds, got {settle}")
    return Settings(
        api=ApiConfig.from_env(env, token=api_token, base_url=base_url),
        max_retries=_int_setting(max_retries, env, "REPLICATE_MAX_RETRIES", _DEFAULT_MAX_RETRIES),
        timeout=_float_setting(timeout, env, "REPLICATE_TIMEOUT", _DEFAULT_TIMEOUT),
        poll_interval=poll_interval,
        create_rate=create_rate,
        read_rate=read_rate,
        settle=settle,
    )


def _int_setting(value: int | None, env: Mapping[str, str], name: str, default: int) -> int:
    if value is not None:
        return value
    raw = env.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _float_setting(value: float | None, env: Mapping[str, str], name: str, default: float) -> float:
    if value is not None:
        return float(value)
    raw = env.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
