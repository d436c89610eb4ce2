"""Describe how the emulator behaves: limits, timings, expiry and (off by default) faults.

Every knob defaults to what Replicate does, except timings, which are short so a demo is
quick; ``time_scale`` shrinks them further for tests. Faults come in two flavours: rates
(drawn from a seeded RNG) and deterministic counters that tests rely on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EmulatorConfig", "ModelTiming"]


@dataclass(frozen=True, slots=True)
class ModelTiming:
    """Seconds a model spends in ``starting`` (cold start) and ``processing`` (run time)."""

    cold_start: float = 0.2
    run_time: float = 0.8


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Hold every emulator knob; build with keywords, `from_file`, or `replace`."""

    token: str = "r8_emulator_token"  # noqa: S105 - a well-known fake token
    # Limits (Replicate: 600 creates/min, 3000 other calls/min; short bursts allowed).
    create_rate_per_min: float = 600.0
    create_burst: int = 600
    read_rate_per_min: float = 3000.0
    read_burst: int = 3000
    low_credit: bool = False  # creates drop to 6/min with a burst of 1, with the real wording
    # Timings: per-model overrides of the catalogue defaults; every duration is scaled.
    time_scale: float = 1.0
    model_timings: Mapping[str, ModelTiming] = field(default_factory=dict)
    output_expiry: float = 3600.0  # seconds (unscaled) until output is removed, files 404
    file_expiry: float = 86400.0  # uploaded input files
    video_size: int = 8 * 1024 * 1024
    data_uri_max: int = 256 * 1024  # sync (Prefer: wait) outputs below this become data: URIs
    sync_partial_on_expiry: bool = False  # answer an expired wait with processing + partial
    # Every GET of a succeeded prediction inlines files below data_uri_max as data: URIs,
    # as a sync answer does, so a poller meets data: URIs at any depth of an output.
    inline_outputs: bool = False
    max_upload: int = 100 * 1024 * 1024
    output_salt: str = ""  # mixed into every output file's bytes: change it to serve new bytes
    # Webhooks.
    webhook_secret: str | None = None  # None: a random whsec_ key per emulator
    webhook_retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    webhook_timeout: float = 5.0
    # Rate-based faults (0.0 = off), drawn from Random(seed).
    seed: int = 0
    create_5xx_rate: float = 0.0
    create_5xx_after_store: bool = False  # the 5xx comes after storing: an orphan prediction
    get_5xx_rate: float = 0.0
    list_5xx_rate: float = 0.0
    cancel_5xx_rate: float = 0.0
    file_5xx_rate: float = 0.0
    fault_status: int = 503
    cut_download_rate: float = 0.0  # close the connection after half the body
    stall_rate: float = 0.0
    stall_seconds: float = 0.0  # unscaled: stalls test client timeouts
    latency_seconds: float = 0.0  # added to every API call (unscaled)
    transient_failure_rate: float = 0.0
    permanent_failure_rate: float = 0.0
    # Deterministic faults for tests.
    fail_first_per_input: int = 0  # first N predictions of each (model, input) fail
    cut_first_downloads: int = 0  # first N GETs of each output file are cut, any Range
    create_5xx_first: int = 0  # the next N creates answer fault_status
    get_5xx_first: int = 0  # the next N prediction GETs answer fault_status
    throttle_next_creates: int = 0  # the next N creates answer 429
    throttle_next_lists: int = 0  # the next N prediction list calls answer 429
    insufficient_credit: bool = False  # every create answers 402 (nothing is stored)
    forbidden_creates: bool = False  # every create answers 403: the token may only read
    hang_creates: int = 0  # the next N creates are read, then never answered (nothing stored)
    hang_seconds: float = 120.0  # unscaled bound of a hung create; then 504 (or on disconnect)
    foreign_predictions: int = 0  # N predictions "from the web" appear in the list (source web)
    hang_after_store: bool = False  # a hung create stores its prediction first (an orphan)
    # The list is behind a get by this many seconds (unscaled): newer predictions are
    # missing from it, and every entry shows its state as of that long ago.
    list_lag: float = 0.0
    # Page the list by offset from the newest, and let N web predictions appear after
    # every page: the pages shift under a client while it pages.
    list_shift: int = 0
    stream_drop_after_events: int = 0  # a prediction's first stream ends after N events

    def timing(self, model: str, default: ModelTiming) -> ModelTiming:
        """Return the scaled timing of ``model``."""
        base = self.model_timings.get(model, default)
        return ModelTiming(base.cold_start * self.time_scale, base.run_time * self.time_scale)

    def replace(self, **knobs: Any) -> EmulatorConfig:
        """Return a copy with ``knobs`` changed; unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **_coerce(knobs))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EmulatorConfig:
        """Build from plain data (as read from YAML/JSON); an unknown knob is a TypeError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"unknown emulator knob {unknown[0]!r}")
        return cls().replace(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> EmulatorConfig:
        """Read a YAML or JSON file of knobs (JSON is YAML, but say which failed)."""
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise TypeError(f"{path}: expected a mapping of emulator knobs")
        return cls.from_mapping(data)


def _coerce(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Turn plain data into the field types that need it (timings, tuples)."""
    out = dict(knobs)
    if "model_timings" in out:
        out["model_timings"] = {
            name: t if isinstance(t, ModelTiming) else ModelTiming(**t)
            for name, t in out["model_timings"].items()
        }
    if "webhook_retry_delays" in out:
        out["webhook_retry_delays"] = tuple(float(d) for d in out["webhook_retry_delays"])
    return out
