"""Feedback joined to what was predicted: which model served the request, what it said, when.

Each item names a request id (and a row of a multi-row request) and brings either the true
label or a reward in [0, 1]. Items are checked in order of cost: the id's form (malformed),
its signature and age when it is ours (forged, expired), then the store (unknown; an id of ours
that carries its prediction needs no lookup), the row index and the label. The same (request
id, row) counts once, across workers and replicas. Accepted items add to the counters of the
model that served (per spec revision, for the A/B statistics and the bandit, and overall, for
online quality).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from app.errors import BrokenExperiment, ExperimentNotFound, ServiceError
from app.feedback.ids import RequestIds
from app.feedback.recorder import PredictionRecorder
from app.feedback.store import ALL, FeedbackStore, PredictionRecord, revision_scope
from app.metrics import ServiceMetrics
from app.registry.store import ModelRegistry

# A request id we issued may still sit in its worker's buffer: its record reaches the store
# within a flush. Feedback for an id this young waits for it instead of calling it unknown.
JOIN_PATIENCE_FLUSHES = 3
# A caller's own request id carries no issue time: when it is not in the store, it may still
# sit in another worker's buffer, so it waits this many flushes before it is called unknown.
CALLER_PATIENCE_FLUSHES = 2


@dataclass(frozen=True)
class FeedbackItem:
    request_id: str
    row: int = 0
    label: str | None = None
    reward: float | None = None


@dataclass(frozen=True)
class Outcome:
    index: int
    status: str  # "accepted", "duplicate" or a rejection code
    message: str = ""
    http_status: int = 200
    model_tag: str | None = None
    correct: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.model_tag is not None:
            body["model_tag"] = self.model_tag
        if self.correct is not None:
            body["correct"] = self.correct
        if self.message:
            body["message"] = self.message
        return body


def _rejected(index: int, code: str, message: str, status: int) -> Outcome:
    return Outcome(index, code, message, status)


class FeedbackService:
    def __init__(
        self,
        store: Callable[[], FeedbackStore],
        ids: RequestIds,
        registry: ModelRegistry,
        metrics: ServiceMetrics,
        retention_seconds: float,
        flush_seconds: float,
        recorder: PredictionRecorder | None = None,
    ) -> None:
        """``recorder``: this worker's buffer of served requests, written before a join so
        feedback sent right after its prediction finds it."""
        self._store = store
        self._recorder = recorder
        self._ids = ids
        self._registry = registry
        self._metrics = metrics
        self._retention = retention_seconds
        self._flush = flush_seconds
        self._classes: dict[str, set[str]] = {}

    async def submit(self, items: Sequence[FeedbackItem]) -> list[Outcome]:
        """Join, deduplicate and count ``items``; one outcome per item, in order."""
        now = time.time()
        outcomes: dict[int, Outcome] = {}
        pending: dict[int, FeedbackItem] = {}
        young: dict[str, float] = {}
        sealed: dict[str, PredictionRecord] = {}
        for index, item in enumerate(items):
            rejection = self._check_id(index, item, now, young, sealed)
            if rejection is not None:
                outcomes[index] = rejection
            else:
                pending[index] = item
        records = sealed | await self._join(
            [i.request_id for i in pending.values() if i.request_id not in sealed], young
        )
        joined: dict[int, tuple[FeedbackItem, PredictionRecord]] = {}
        for index, item in pending.items():
            record = records.get(item.request_id)
            rejection = await self._check_record(index, item, record, now)
            if rejection is not None:
                outcomes[index] = rejection
            else:
                assert record is not None
                joined[index] = (item, record)
        outcomes.update(await self._count(joined, now))
        ordered = [outcomes[i] for i in range(len(items))]
        for outcome in ordered:
            self._metrics.feedback_item(outcome.status)
        return ordered

    def _check_id(
        self,
        index: int,
        item: FeedbackItem,
        now: float,
        young: dict[str, float],
        sealed: dict[str, PredictionRecord],
    ) -> Outcome | None:
        """A rejection of the id itself, or None; ids that may not have reached the store yet
        go into ``young`` with how long to wait for them, sealed ids into ``sealed`` with the
        prediction they carry."""
        check = self._ids.check(item.request_id)
        if check.kind == "malformed":
            return _rejected(
                index,
                "malformed_request_id",
                "request_id must be 1-128 characters of letters, digits and . _ : -",
                422,
            )
        if check.kind == "forged":
            return _rejected(
                index,
                "forged_request_id",
                f"request_id {item.request_id!r} looks like one of ours but its signature is "
                "wrong: it was not issued by this service",
                403,
            )
        if check.kind == "caller":
            young[item.request_id] = CALLER_PATIENCE_FLUSHES * self._flush
        if check.kind == "ours" and check.issued_at is not None:
            if now - check.issued_at > self._retention:
                return _rejected(
                    index,
                    "expired_request_id",
                    f"request_id {item.request_id!r} is older than the retention of "
                    f"{self._retention:g} s (ML_API_FEEDBACK_RETENTION_SECONDS)",
                    410,
                )
            if check.record is not None:
                sealed[item.request_id] = check.record
            elif now - check.issued_at < JOIN_PATIENCE_FLUSHES * self._flush + 1:
                young[item.request_id] = JOIN_PATIENCE_FLUSHES * self._flush + 1
        return None

    async def _join(self, ids: list[str], young: dict[str, float]) -> dict[str, PredictionRecord]:
        """The stored records of ``ids``, waiting for young ones that may be in flight."""
        if not ids:
            return {}
        if self._recorder is not None:
            # Also waits for a flush under way, which may hold the very record asked for.
            await self._recorder.flush()
        records = await anyio.to_thread.run_sync(self._store().predictions, ids)
        waiting = [i for i in ids if i in young and i not in records]
        patience = max((young[i] for i in waiting), default=0.0)
        deadline = time.monotonic() + patience
        while waiting and time.monotonic() < deadline:
            await asyncio.sleep(self._flush / 2)
            records |= await anyio.to_thread.run_sync(self._store().predictions, waiting)
            waiting = [i for i in waiting if i not in records]
        return records

    async def _check_record(
        self, index: int, item: FeedbackItem, record: PredictionRecord | None, now: float
    ) -> Outcome | None:
        if record is None:
            return _rejected(
                index,
                "unknown_request_id",
                f"no prediction with request_id {item.request_id!r} (never served, or older "
                "than the retention)",
                404,
            )
        if now - record.at > self._retention:
            return _rejected(index, "expired_request_id", "the prediction is past retention", 410)
        if not 0 <= item.row < len(record.labels):
            return _rejected(
                index,
                "invalid_row",
                f"row {item.row} is out of range: request {item.request_id!r} had "
                f"{len(record.labels)} row(s) (0-{len(record.labels) - 1})",
                422,
            )
        if item.label is not None:
            classes = await self._known_labels(record.tag)
            if classes is not None and item.label not in classes:
                return _rejected(
                    index,
                    "unknown_label",
                    f"label {item.label!r} is not a class of model {record.tag!r} nor of any "
                    f"published experiment ({', '.join(sorted(classes))})",
                    422,
                )
        return None

    async def _known_labels(self, tag: str) -> set[str] | None:
        """The classes of every published experiment: a true label that the model never
        learnt is still the truth (the model was wrong); a label no experiment knows is most
        likely a typo."""
        own = await self._classes_of(tag)
        if own is None:
            return None
        try:
            page = await anyio.to_thread.run_sync(lambda: self._registry.list_experiments())
        except ServiceError:
            return own
        return own.union(*(s.classes for s in page.experiments))

    async def _classes_of(self, tag: str) -> set[str] | None:
        classes = self._classes.get(tag)
        if classes is None:
            try:
                meta = await anyio.to_thread.run_sync(self._registry.read_meta, tag)
            except (ExperimentNotFound, BrokenExperiment):
                return None  # the experiment went away: accept any label rather than lose it
            classes = self._classes[tag] = set(meta.classes)
        return classes

    async def _count(
        self, joined: dict[int, tuple[FeedbackItem, PredictionRecord]], now: float
    ) -> dict[int, Outcome]:
        if not joined:
            return {}
        indexes = list(joined)
        entries = []
        for index in indexes:
            item, record = joined[index]
            fields = _fields(item, _correct(item, record), now - record.at)
            deltas = [
                (revision_scope(record.revision), record.tag, fields),
                (ALL, record.tag, fields),
            ]
            entries.append((item.request_id, item.row, deltas))
        store = self._store()
        fresh = await anyio.to_thread.run_sync(store.record_feedback, entries, self._retention)
        outcomes: dict[int, Outcome] = {}
        for index, is_new in zip(indexes, fresh, strict=True):
            item, record = joined[index]
            correct = _correct(item, record)
            if is_new:
                self._metrics.feedback_joined(
                    record.tag, record.role, correct, item.reward, now - record.at
                )
            status = "accepted" if is_new else "duplicate"
            outcomes[index] = Outcome(index, status, model_tag=record.tag, correct=correct)
        return outcomes


def _correct(item: FeedbackItem, record: PredictionRecord) -> bool | None:
    return None if item.label is None else item.label == record.labels[item.row]


def _fields(item: FeedbackItem, correct: bool | None, delay: float) -> dict[str, float]:
    fields = {"feedbacks": 1.0, "delay_sum": max(0.0, delay)}
    if correct is not None:
        fields |= {"label_n": 1.0, "label_correct": float(correct)}
    if item.reward is not None and math.isfinite(item.reward):
        fields |= {"reward_n": 1.0, "reward_sum": item.reward, "reward_sq": item.reward**2}
    return fields
