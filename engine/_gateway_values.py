"""The values the gateway hands out besides predictions: list pages and stream events.

Split from `engine._gateway` (issue 11); `engine._gateway` re-exports both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from engine._prediction import Prediction

__all__ = ["PredictionPage", "StreamEvent"]


@dataclass(frozen=True, slots=True)
class PredictionPage:
    """One page of ``GET /v1/predictions``; pass ``next`` back as the cursor."""

    results: list[Prediction]
    next: str | None = None
    # Ids whose entry lacks ``output`` or ``metrics``: a GET has what the list left out.
    lacking: frozenset[str] = frozenset()

    def __iter__(self) -> Iterator[Prediction]:
        """Iterate over the page's predictions, as the seed's ``for pred in page`` does."""
        return iter(self.results)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of a stream: ``output``, ``logs``, ``error`` or ``done``."""

    event: str
    data: str
    id: str

    def __str__(self) -> str:
        """Return the text of an ``output`` event and "" otherwise, like replicate's events."""
        return self.data if self.event == "output" else ""
