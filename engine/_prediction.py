"""Hold a prediction as the engine sees it: a frozen value with an enum status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Prediction", "PredictionStatus"]


class PredictionStatus(StrEnum):
    """Replicate's prediction states (``aborted`` is newer than replicate 1.0.7)."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        """Return True once the prediction can no longer change."""
        return self not in (PredictionStatus.STARTING, PredictionStatus.PROCESSING)


@dataclass(frozen=True, slots=True)
class Prediction:
    """A snapshot of one prediction, parsed once from the API's JSON.

    Attribute names match replicate's ``Prediction`` so code written for the client reads
    the same (``p.id``, ``p.status == "succeeded"``, ``p.output``, ``p.logs``, ``p.error``).
    ``output`` is the raw JSON output; `jobs.outputs` normalises it into files.
    """

    id: str
    model: str
    version: str
    status: PredictionStatus
    input: Mapping[str, Any] | None = None
    output: Any = None
    logs: str | None = None
    error: str | None = None
    metrics: Mapping[str, Any] | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    urls: Mapping[str, str] = field(default_factory=dict)
    data_removed: bool = False
    hardware: str | None = None  # the SKU it ran on, when the API reports it

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        """Build from API JSON; unknown keys are ignored, as the API adds fields."""
        return cls(
            id=str(data["id"]),
            model=str(data.get("model") or ""),
            version=str(data.get("version") or ""),
            status=PredictionStatus(data["status"]),
            input=data.get("input"),
            output=data.get("output"),
            logs=data.get("logs"),
            error=None if data.get("error") is None else str(data["error"]),
            metrics=data.get("metrics"),
            created_at=data.get("created_at"),
            started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
            urls={k: v for k, v in (data.get("urls") or {}).items() if isinstance(v, str)},
            data_removed=bool(data.get("data_removed", False)),
            hardware=data["hardware"] if isinstance(data.get("hardware"), str) else None,
        )

    @property
    def predict_time(self) -> float | None:
        """Return ``metrics.predict_time`` in seconds, when the server reported it."""
        value = (self.metrics or {}).get("predict_time")
        return float(value) if isinstance(value, int | float) else None
