"""What each worker served, written to the feedback store off the request path.

A served request only appends a tuple to an in-memory buffer (and, while a split runs, bumps
a counter of which arm it went to and under which weights). Every ``flush_seconds`` the
buffer goes to the store in one batch from a worker thread. When the store is out of reach
the records wait (up to ``max_buffer``; beyond that the oldest are dropped and counted), and
predictions keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable

import anyio.to_thread

from app.errors import FeedbackStoreUnavailable
from app.feedback.store import ALL, Deltas, FeedbackStore, PredictionRecord, revision_scope
from app.metrics import ServiceMetrics
from app.serving.routing import Router

logger = logging.getLogger(__name__)


class PredictionRecorder:
    def __init__(
        self,
        store: Callable[[], FeedbackStore] | None,
        metrics: ServiceMetrics,
        retention_seconds: float,
        flush_seconds: float,
        max_buffer: int = 100_000,
    ) -> None:
        """``store`` None: feedback is off and nothing is recorded."""
        self._store = store
        self._metrics = metrics
        self._ttl = retention_seconds
        self.flush_seconds = flush_seconds
        self._max = max_buffer
        self._pending: deque[PredictionRecord] = deque()
        self._assigned: dict[tuple[int, str], float] = {}
        self._expected: dict[tuple[int, str], float] = {}
        self._flush_lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def record(
        self, request_id: str, tag: str, role: str, revision: int, labels: list[str]
    ) -> None:
        """A served request (on the request path: an append, nothing more)."""
        if len(self._pending) >= self._max:
            self._pending.popleft()
            self._metrics.feedback_records_dropped()
        self._pending.append(PredictionRecord(request_id, tag, role, revision, labels, time.time()))

    def assigned(self, revision: int, router: Router, tag: str) -> None:
        """A request the router placed while a split runs: for the sample-ratio check, the
        arm it reached and the weights it was placed under."""
        key = (revision, tag)
        self._assigned[key] = self._assigned.get(key, 0.0) + 1.0
        expected = self._expected
        for arm, weight in router.weights.items():
            key = (revision, arm)
            expected[key] = expected.get(key, 0.0) + weight / 100

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        """Write what was buffered; on a store outage keep it for the next attempt."""
        if self._store is None:
            return
        async with self._flush_lock:
            records = list(self._pending)
            self._pending.clear()
            deltas = self._take_counters(records)
            if not records and not deltas:
                return
            try:
                await anyio.to_thread.run_sync(self._write, records, deltas)
            except FeedbackStoreUnavailable as exc:
                self._metrics.feedback_store_failed("record")
                logger.warning("feedback store: %d record(s) wait: %s", len(records), exc.message)
                self._pending.extendleft(reversed(records))
                while len(self._pending) > self._max:
                    self._pending.popleft()
                    self._metrics.feedback_records_dropped()
                self._restore_counters(deltas)

    def _write(self, records: list[PredictionRecord], deltas: Deltas) -> None:
        assert self._store is not None
        store = self._store()
        if records:
            store.save_predictions(records, self._ttl)
        store.add(deltas)

    def _take_counters(self, records: list[PredictionRecord]) -> Deltas:
        rows: Counter[str] = Counter()
        for record in records:
            rows[record.tag] += len(record.labels)
        deltas: list[tuple[str, str, dict[str, float]]] = [
            (ALL, tag, {"rows": float(n)}) for tag, n in rows.items()
        ]
        for name, counts in (("assigned", self._assigned), ("expected", self._expected)):
            for (revision, tag), value in counts.items():
                deltas.append((revision_scope(revision), tag, {name: value}))
        self._assigned, self._expected = {}, {}
        return deltas

    def _restore_counters(self, deltas: Deltas) -> None:
        """Put back the assignment counters of a failed flush (the records themselves are
        kept, so their row counts are simply taken again)."""
        for scope, tag, fields in deltas:
            if not scope.startswith("rev:"):
                continue
            key = (int(scope.removeprefix("rev:")), tag)
            for name, counts in (("assigned", self._assigned), ("expected", self._expected)):
                if name in fields:
                    counts[key] = counts.get(key, 0.0) + fields[name]
