"""Build the engine's configuration once, at the edge, as frozen values.

Only `ApiConfig.from_env` (called by the CLI and by the seed-compatible
`ReplicateClient`) reads the environment; the library takes these values as arguments.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from engine._errors import ConfigError
from engine._pricing import PriceTable
from jobs.names import ENGINE_FILES

__all__ = [
    "DEFAULT_BASE_URL",
    "JOURNAL_NAME",
    "MAX_CONCURRENCY",
    "MAX_SETTLE",
    "SETTLE_SECONDS",
    "ApiConfig",
    "EngineConfig",
    "Secret",
    "check_base_url",
    "default_output_dir",
    "journal_path",
]

DEFAULT_BASE_URL = "https://api.replicate.com"
TOKEN_VARIABLES = ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY")
JOURNAL_NAME = ENGINE_FILES.journal
# The most jobs in flight at once. At Replicate's default create limit (600 a minute) a
# run fills 10,000 slots only with predictions longer than 16 minutes each; more is a
# typo (a 24 GB out-of-memory kill was one). Each slot in use is one task and its job.
MAX_CONCURRENCY = 10_000
# Seconds from sending a create whose answer was lost (a timeout, a 5xx, a kill) until its
# absence from the prediction list is believed and it may be sent again: the list can be
# briefly behind a get (issue 17; Replicate documents no bound). 30 s is the replicate
# client's read timeout, the longest it waits on one answer. The one home of this wait:
# a run, its next run after a kill, ``cancel``, a --redis claimer and ReplicateClient.
SETTLE_SECONDS = 30.0
# The longest settle window (seconds): an hour, Replicate's output retention; a create
# looked for later than that could no longer bring its files back anyway.
MAX_SETTLE = 3600.0


_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a header value may carry
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def check_base_url(url: str) -> None:
    """Raise `ConfigError` unless ``url`` can be the API's base URL.

    https with a host and a port in range. Plain http only to this machine (localhost,
    127.0.0.1, ::1: a local proxy or emulator), where the token does not cross a network.
    """
    where = f"REPLICATE_BASE_URL {re.sub(r'//[^/@]*@', '//***@', url)!r}"  # no password
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", a malformed IPv6 host
        raise ConfigError(f"{where} is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{where} must be an https:// URL with a host")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigError(f"{where} must use https (plain http only to localhost)")
    if port == 0:
        raise ConfigError(f"{where}: port 0 is not a port to connect to")
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{where} must not carry credentials, a query or a fragment")


def default_output_dir(manifest: Path) -> Path:
    """Return where ``run`` puts a manifest's outputs when ``--output-dir`` is not given."""
    return Path("outputs") / manifest.stem


def journal_path(output_dir: Path, state: Path | None = None) -> Path:
    """Return a run's journal: ``state`` (``--state``) or ``journal.jsonl`` in the outputs.

    The one derivation: the run, ``validate``, ``status`` and ``export`` all ask here.
    """
    return state if state is not None else output_dir / JOURNAL_NAME


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows itself in reprs, logs or messages."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """Return the secret, for the one place that must send it (the auth header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """How to reach a Replicate-compatible API.

    ``ca_file`` is the PEM bundle to trust (what ``SSL_CERT_FILE`` names); None uses the
    system's. ``token`` None means "not configured": the first request fails with
    `ConfigError` naming the variables, never with an httpx traceback.
    """

    token: Secret | None = None
    base_url: str = DEFAULT_BASE_URL
    ca_file: Path | None = None
    timeout: float = 30.0  # read timeout of one HTTP call, not of a prediction
    # One HTTP attempt in total (connect, TLS, send, first byte, whole answer); a download
    # must move 64 KiB in this long. None: no overall bound (httpx's per-read ones only).
    attempt_timeout: float | None = 120.0
    cancel_after: float | None = None  # seconds; sent as Replicate's Cancel-After header

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        token: str | None = None,
        base_url: str | None = None,
    ) -> ApiConfig:
        """Read token, base URL and CA bundle the way the replicate client does.

        Token: ``token`` argument, else ``REPLICATE_API_TOKEN``, else ``REPLICATE_API_KEY``.
        Base URL: ``base_url`` argument, else ``REPLICATE_BASE_URL``, else Replicate's.
        CA bundle: ``SSL_CERT_FILE``, as httpx honours it.
        """
        env = os.environ if environ is None else environ
        raw = token or next((env[v] for v in TOKEN_VARIABLES if env.get(v)), None)
        # A pasted token often carries a newline: strip it here, refuse what is left inside.
        raw = raw.strip() if raw else raw
        ca = env.get("SSL_CERT_FILE") or None
        return cls(
            token=Secret(raw) if raw else None,
            base_url=(base_url or env.get("REPLICATE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"),
            ca_file=Path(ca) if ca else None,
        )

    def __post_init__(self) -> None:
        check_base_url(self.base_url)
        if self.token and not _TOKEN_TEXT.fullmatch(self.token.reveal()):
            # Never sent as an illegal header (and retried): say so once, without it.
            raise ConfigError(
                "the Replicate API token contains whitespace or characters a token cannot "
                "have; check REPLICATE_API_TOKEN"
            )
        if self.attempt_timeout is not None and not self.attempt_timeout > 0:
            raise ConfigError(f"attempt_timeout must be positive, got {self.attempt_timeout}")

    def require_token(self, *, how: str | None = "ApiConfig(token=Secret(...))") -> Secret:
        """Return the token or raise `ConfigError` naming where it is looked for.

        ``how`` is the caller's own way to pass one (None when there is none, as in the CLI).
        """
        if not self.token:
            also = f", or pass {how}" if how else ""
            raise ConfigError(
                f"no Replicate API token: set REPLICATE_API_TOKEN (or REPLICATE_API_KEY){also}"
            )
        return self.token


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything a batch run needs, decided before it starts.

    Its field defaults are the only defaults (the CLI passes only what the user gave).
    Rates are requests per minute, as Replicate states its limits. ``prediction_retries``
    counts extra predictions per job after a transient model failure (``--max-retries``);
    call-level retries (network, 5xx, 429) are separate and bounded by ``call_attempts``.
    """

    api: ApiConfig = field(default_factory=ApiConfig)
    output_dir: Path = Path("outputs")
    state_path: Path | None = None  # default: output_dir / ENGINE_FILES.journal
    concurrency: int = 32
    create_rate: float = 600.0
    read_rate: float = 3000.0
    prediction_retries: int = 2
    call_attempts: int = 6
    call_timeout: float = 300.0  # give up on one call after retrying this long
    poll_interval: float = 0.5  # the fastest a single prediction is polled
    job_timeout: float | None = None  # per prediction, also sent as Cancel-After
    deadline: float | None = None  # seconds for the whole run: then stop creating, drain
    # After a first Ctrl-C/SIGTERM, work still running this long is stopped (journaled,
    # resumed by the next run); canceling predictions on exit is bounded by it too.
    shutdown_grace: float = 10.0
    settle: float = SETTLE_SECONDS  # see SETTLE_SECONDS
    max_predictions: int | None = None
    max_predict_seconds: float | None = None
    retry_failed: bool = False
    only: frozenset[str] = frozenset()
    cancel_on_exit: bool = False
    sidecars: bool = True  # write {stem}.info.json beside each job's outputs
    embed_metadata: bool = False  # prompt and parameters inside image files
    prices: PriceTable | None = None  # the user's price table: money next to billable units
    max_spend: float | None = None  # stop creating once the priced spend reaches this
    # The manifest the jobs come from: recorded in the journal's run header, so a journal
    # written for another manifest is noticed (each job's input is compared anyway).
    manifest: Path | None = None
    # A job with an explicit id whose model or input changed since the journal saw it:
    # "rerun" it (old outputs renamed aside) or only "report" it (exit 1).
    on_changed: Literal["rerun", "report"] = "rerun"
    download_chunk_size: int = 256 * 1024  # reads when a part is hashed again to resume
    journal_flush_interval: float = 0.02  # group commit window for fsync

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency must be 1 to {MAX_CONCURRENCY}, got {self.concurrency}")
        if self.create_rate <= 0 or self.read_rate <= 0:
            raise ConfigError("rate limits must be positive requests per minute")
        if self.on_changed not in ("rerun", "report"):
            raise ConfigError(f"on_changed must be 'rerun' or 'report', got {self.on_changed!r}")
        if not 0 <= self.settle <= MAX_SETTLE:
            raise ConfigError(f"settle must be 0 to {MAX_SETTLE:g} seconds, got {self.settle}")
        if not self.shutdown_grace >= 0:
            raise ConfigError(f"shutdown_grace must be 0 or more, got {self.shutdown_grace}")
        if self.prediction_retries < 0:
            raise ConfigError(
                f"prediction_retries must be 0 or more, got {self.prediction_retries}"
            )
        if self.max_spend is not None and self.prices is None:
            raise ConfigError("max_spend needs a price table (--prices FILE)")

    @property
    def journal_path(self) -> Path:
        """Return where the journal lives (``--state`` or next to the outputs)."""
        return journal_path(self.output_dir, self.state_path)
