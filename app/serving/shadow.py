"""Shadows: mirrored requests scored after the answer was sent, and compared with it.

A request answered by the primary is offered to each shadow the router picks. The offer only
appends to a bounded queue: nothing on the request path waits for a shadow, and when the
queue is full the mirror is dropped and counted (never the primary's answer). The mirror task
yields to live traffic: while requests keep coming it lets mirrors gather for a moment and
then scores those of one shadow together in one model call, so a shadow costs the primary
little even at 100 % mirroring. A shadow's failure is counted and logged, never sent to a
client. Each compared row yields label agreement and the largest absolute difference in
class probability; each mirrored request the model time of both sides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np

from app.metrics import ServiceMetrics
from app.serving.batching import INLINE_BELOW_SECONDS
from app.serving.inputs import Batch
from app.serving.model import LoadedModel, PredictionResult
from app.serving.runtime import run_with_thread_limit

logger = logging.getLogger(__name__)

# While requests are in flight, mirrors wait at most this long for more to join their call.
MAX_DEFER_SECONDS = 0.02
POLL_SECONDS = 0.002


class InFlight:
    """Requests being scored now, and how many were ever scored: the mirror waits while
    traffic keeps coming."""

    def __init__(self) -> None:
        self.count = 0
        self.started = 0

    def busy(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class Mirror:
    shadow: LoadedModel
    primary_tag: str
    batch: Batch
    answer: PredictionResult
    primary_seconds: float


class ShadowMirror:
    def __init__(
        self,
        metrics: ServiceMetrics,
        queue_size: int,
        batch_rows: int,
        in_flight: InFlight | None = None,
        poll_seconds: float = POLL_SECONDS,
        max_defer_seconds: float = MAX_DEFER_SECONDS,
    ) -> None:
        self._metrics = metrics
        self._poll = poll_seconds
        self._max_defer = max_defer_seconds
        self._size = queue_size
        self._batch_rows = batch_rows
        self._traffic = in_flight or InFlight()
        self._queue: deque[Mirror] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(
        self,
        shadows: list[LoadedModel],
        batch: Batch,
        answer: PredictionResult,
        primary_seconds: float,
    ) -> None:
        """Queue the request for each shadow; drop (and count) what does not fit."""
        for shadow in shadows:
            if len(self._queue) >= self._size:
                self._metrics.shadow_dropped(shadow.tag, "queue_full")
                continue
            self._queue.append(Mirror(shadow, answer.model_tag, batch, answer, primary_seconds))
        self._idle.clear()
        self._wakeup.set()

    async def drained(self) -> None:
        """Wait until every queued mirror has been scored (tests and shutdown)."""
        await self._idle.wait()

    async def run(self) -> None:
        """The mirror task of a worker: score queued mirrors, off the answer's path."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._yield_to_traffic()
                group = self._take()
                await self._score(group)
            self._idle.set()

    async def _yield_to_traffic(self) -> None:
        """Wait while requests keep coming (at most ``max_defer_seconds``, and not past a
        half-full queue), so that their mirrors join one call; a poll without a new request ends it.

        Judged by requests started between polls, not by requests in a model call at this
        instant: a model called inline on the loop is never "in a call" when this task runs,
        and the mirror then scored almost every request alone (a shadow cost a fifth of a
        saturated worker's throughput instead of a few per cent).
        """
        traffic = self._traffic
        deadline = time.monotonic() + self._max_defer
        seen = traffic.started
        # Polls a counter that every request bumps: an event per request would cost more.
        while len(self._queue) < self._size // 2 and time.monotonic() < deadline:
            await asyncio.sleep(self._poll)
            if traffic.started == seen and not traffic.busy():
                return
            seen = traffic.started

    def _take(self) -> list[Mirror]:
        """Mirrors of the first queued shadow (in order), up to the batch size in rows."""
        first = self._queue.popleft()
        group, rows = [first], first.batch.n_rows
        kept: deque[Mirror] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.shadow is first.shadow and rows + item.batch.n_rows <= self._batch_rows:
                group.append(item)
                rows += item.batch.n_rows
            else:
                kept.append(item)
        kept.extend(self._queue)
        self._queue = kept
        return group

    async def _score(self, group: list[Mirror]) -> None:
        shadow = group[0].shadow
        combined = Batch.concat([m.batch for m in group])
        started = time.perf_counter()
        try:
            cost = shadow.call_seconds
            if cost is not None and cost < INLINE_BELOW_SECONDS:
                probabilities = shadow.predict_proba(combined)
            else:
                probabilities = await anyio.to_thread.run_sync(
                    run_with_thread_limit, shadow.predict_proba, combined
                )
        except Exception as exc:
            self._metrics.shadow_failed(group[0].primary_tag, shadow.tag, len(group))
            logger.warning(
                "shadow %s failed on %d mirrored request(s): %s", shadow.tag, len(group), exc
            )
            return
        seconds = time.perf_counter() - started
        self._compare(group, PredictionResult(shadow.tag, shadow.classes, probabilities), seconds)

    def _compare(self, group: list[Mirror], shadow: PredictionResult, seconds: float) -> None:
        by_primary: dict[str, list[tuple[Mirror, slice]]] = {}
        start = 0
        for mirror in group:
            end = start + mirror.batch.n_rows
            by_primary.setdefault(mirror.primary_tag, []).append((mirror, slice(start, end)))
            start = end
        labels = shadow.labels
        self._metrics.rows_predicted(
            shadow.model_tag, "shadow", shadow.classes, shadow.probabilities, {}
        )
        for primary_tag, parts in by_primary.items():
            answers = [m.answer for m, _ in parts]
            rows = np.concatenate([np.arange(s.start, s.stop) for _, s in parts])
            primary_labels = [label for a in answers for label in a.labels]
            shadow_labels = [labels[i] for i in rows.tolist()]
            agreed = sum(p == s for p, s in zip(primary_labels, shadow_labels, strict=True))
            diffs = probability_diffs(answers, shadow, rows)
            self._metrics.shadow_compared(
                primary_tag,
                shadow.model_tag,
                agreed,
                diffs,
                [m.primary_seconds for m, _ in parts],
                seconds,
            )
            self._metrics.model_served(shadow.model_tag, "shadow", seconds, requests=len(parts))


def probability_diffs(
    answers: list[PredictionResult], shadow: PredictionResult, rows: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Per row, the largest absolute difference in any class's probability (a class one model
    does not know has probability 0 there)."""
    classes = list(dict.fromkeys([*answers[0].classes, *shadow.classes]))
    index = {c: i for i, c in enumerate(classes)}
    primary = np.concatenate([_aligned(a, index) for a in answers])
    other = _aligned(shadow, index)[rows]
    return np.asarray(np.abs(primary - other).max(axis=1))


def _aligned(result: PredictionResult, index: dict[str, int]) -> np.ndarray[Any, Any]:
    if list(index) == result.classes:
        return result.probabilities
    out = np.zeros((result.probabilities.shape[0], len(index)))
    out[:, [index[c] for c in result.classes]] = result.probabilities
    return out
