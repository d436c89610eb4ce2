"""Count what the emulator served, so tests and benchmarks assert on behaviour."""

from __future__ import annotations

import heapq
import threading
from collections import Counter, deque
from typing import Any

__all__ = ["Stats"]

_WINDOW = 60.0


class Stats:
    """Request, prediction and byte counters; `snapshot()` is JSON-able.

    The server thread writes while tests read from theirs, so structural changes and
    snapshots hold a lock (plain ``+=`` on an int attribute needs none under the GIL).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.throttled = 0
        self.predictions_created = 0
        self.per_input: Counter[str] = Counter()
        self.peak_concurrent = 0
        self.peak_creates_per_60s = 0
        self.bytes_served = 0
        self.downloads_cut = 0
        self.webhooks_sent: Counter[int] = Counter()  # by response status (0 = no answer)
        self.creates_by_model: Counter[str] = Counter()  # stored predictions per model ref
        self.creates_402 = 0  # creates refused for insufficient credit
        self.hung_creates = 0  # creates read and never answered (hang_creates)
        self.downloads_by_status: Counter[int] = Counter()  # output and upload file GETs
        self.foreign_predictions = 0  # predictions added "from the web"
        self.tls_handshakes = 0  # ClientHellos received: one per new TLS connection
        self._recent_creates: deque[float] = deque()
        self._active: dict[str, float] = {}  # prediction id -> end time
        self._ends: list[tuple[float, str]] = []

    def request(self, endpoint: str, status: int, kind: str = "") -> None:
        """Record one answered request (``kind`` is the route's limiter class)."""
        with self._lock:
            self.requests[endpoint, status] += 1
            if kind == "download":
                self.downloads_by_status[status] += 1
        if status == 429:
            self.throttled += 1
        if status == 402 and kind == "create":
            self.creates_402 += 1

    def handshake(self) -> None:
        """Record one TLS handshake (a new connection: a client that pools makes few)."""
        with self._lock:
            self.tls_handshakes += 1

    def webhook(self, status: int) -> None:
        """Record one webhook delivery attempt by its answer (0: no answer)."""
        with self._lock:
            self.webhooks_sent[status] += 1

    def created(self, key: str, prediction_id: str, now: float, end: float, model: str) -> int:
        """Record a stored prediction; return how many with ``key`` existed before."""
        with self._lock:
            self.creates_by_model[model] += 1
            return self._created(key, prediction_id, now, end)

    def _created(self, key: str, prediction_id: str, now: float, end: float) -> int:
        before = self.per_input[key]
        self.per_input[key] += 1
        self.predictions_created += 1
        self._recent_creates.append(now)
        while self._recent_creates and self._recent_creates[0] <= now - _WINDOW:
            self._recent_creates.popleft()
        self.peak_creates_per_60s = max(self.peak_creates_per_60s, len(self._recent_creates))
        self._sweep(now)
        self._active[prediction_id] = end
        heapq.heappush(self._ends, (end, prediction_id))
        self.peak_concurrent = max(self.peak_concurrent, len(self._active))
        return before

    def ended_early(self, prediction_id: str) -> None:
        """Drop a canceled prediction from the concurrency count."""
        with self._lock:
            self._active.pop(prediction_id, None)

    def _sweep(self, now: float) -> None:
        while self._ends and self._ends[0][0] <= now:
            end, pid = heapq.heappop(self._ends)
            if self._active.get(pid) == end:
                del self._active[pid]

    def concurrent(self, now: float) -> int:
        """Return the number of non-terminal predictions at ``now``."""
        with self._lock:
            self._sweep(now)
            return len(self._active)

    def duplicates(self) -> dict[str, int]:
        """Return the (model, canonical input) keys created more than once, with counts."""
        with self._lock:
            return self._duplicates()

    def _duplicates(self) -> dict[str, int]:
        return {key: n for key, n in self.per_input.items() if n > 1}

    def snapshot(self) -> dict[str, Any]:
        """Return every counter as plain JSON data."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "requests": {f"{ep} {status}": n for (ep, status), n in sorted(self.requests.items())},
            "throttled": self.throttled,
            "predictions_created": self.predictions_created,
            "distinct_inputs": len(self.per_input),
            "duplicates": self._duplicates(),
            "peak_concurrent": self.peak_concurrent,
            "peak_creates_per_60s": self.peak_creates_per_60s,
            "bytes_served": self.bytes_served,
            "downloads_cut": self.downloads_cut,
            "webhooks_sent": {str(k): v for k, v in sorted(self.webhooks_sent.items())},
            "creates_by_model": dict(sorted(self.creates_by_model.items())),
            "creates_402": self.creates_402,
            "hung_creates": self.hung_creates,
            "downloads_by_status": {str(k): v for k, v in sorted(self.downloads_by_status.items())},
            "foreign_predictions": self.foreign_predictions,
            "tls_handshakes": self.tls_handshakes,
        }
