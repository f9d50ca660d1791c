"""What each worker served, written to the feedback store off the request path.

A served request that we give an id to gets a sealed one (see ``app.feedback.ids``): the id
itself carries what was predicted, and nothing is written. A request with the caller's own id,
or too many rows to seal, only appends a tuple to an in-memory buffer. Either way a counter of
rows per tag goes up (and, while a split runs, a counter of which arm the request went to and
under which weights). Every ``flush_seconds`` the buffer and counters go to the store in one
batch from a worker thread. When the store is out of reach the records wait (up to
``max_buffer``; beyond that the oldest are dropped and counted), and predictions keep flowing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import anyio.to_thread

from app.errors import FeedbackStoreUnavailable
from app.feedback.ids import RequestIds
from app.feedback.store import ALL, Deltas, FeedbackStore, PredictionRecord, revision_scope
from app.metrics import ServiceMetrics
from app.serving.routing import Router

logger = logging.getLogger(__name__)


class Answer(Protocol):
    """A model's answer to one request (a ``PredictionResult``): its labels are asked for
    only when feedback is on, since they cost a pass over the rows."""

    @property
    def labels(self) -> list[str]: ...


class PredictionRecorder:
    def __init__(
        self,
        store: Callable[[], FeedbackStore] | None,
        ids: RequestIds,
        metrics: ServiceMetrics,
        retention_seconds: float,
        flush_seconds: float,
        max_buffer: int = 100_000,
    ) -> None:
        """``store`` None: feedback is off and nothing is recorded."""
        self._store = store
        self._ids = ids
        self._metrics = metrics
        self._ttl = retention_seconds
        self.flush_seconds = flush_seconds
        self._max = max_buffer
        self._pending: deque[PredictionRecord] = deque()
        self._rows: dict[str, int] = {}
        self._assigned: dict[tuple[int, str], float] = {}
        self._expected: dict[tuple[int, str], float] = {}
        self._flush_lock = asyncio.Lock()

    def served(
        self, request_id: str | None, tag: str, role: str, revision: int, answer: Answer
    ) -> str:
        """The id to answer a served request with (``request_id``, the caller's, or a new one
        of ours); keeps what feedback needs to join it. On the request path: no I/O."""
        if self._store is None:
            return self._ids.issue() if request_id is None else request_id
        labels = answer.labels
        rows = self._rows
        rows[tag] = rows.get(tag, 0) + len(labels)
        if request_id is None:
            sealed = self._ids.seal(tag, role, revision, labels)
            if sealed is not None:
                return sealed
            request_id = self._ids.issue()
        self._record(request_id, tag, role, revision, labels)
        return request_id

    def _record(
        self, request_id: str, tag: str, role: str, revision: int, labels: list[str]
    ) -> None:
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
            deltas = self._take_counters()
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

    def _take_counters(self) -> Deltas:
        deltas: list[tuple[str, str, dict[str, float]]] = [
            (ALL, tag, {"rows": float(n)}) for tag, n in self._rows.items()
        ]
        self._rows = {}
        for name, counts in (("assigned", self._assigned), ("expected", self._expected)):
            for (revision, tag), value in counts.items():
                deltas.append((revision_scope(revision), tag, {name: value}))
        self._assigned, self._expected = {}, {}
        return deltas

    def _restore_counters(self, deltas: Deltas) -> None:
        """Put back the counters of a failed flush (its records are kept apart)."""
        for scope, tag, fields in deltas:
            if scope == ALL:
                self._rows[tag] = self._rows.get(tag, 0) + int(fields["rows"])
                continue
            key = (int(scope.removeprefix("rev:")), tag)
            for name, counts in (("assigned", self._assigned), ("expected", self._expected)):
                if name in fields:
                    counts[key] = counts.get(key, 0.0) + fields[name]
