"""Adaptive micro-batching: concurrent requests for one model share one model call.

Per-call overhead dominates a model call on a few rows, so rows from requests that arrive
while the model is busy are scored together in the next call. Nothing waits when there is no
queue: an idle model is called at once, and a model whose call is cheaper than a thread hop
(an ONNX graph, typically) is called inline on the event loop. Queues are per model object, so
a batch never mixes models, and each request gets back exactly its own rows, from the model
it took, across a hot swap too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np

from app.serving.inputs import Batch
from app.serving.model import LoadedModel
from app.serving.runtime import run_with_thread_limit

# Below this cost per call a thread hop (and batching) costs more than it saves.
INLINE_BELOW_SECONDS = 0.0005
# Weight of the newest call in the running estimate of the cost of a call (the call alone).
COST_SMOOTHING = 0.2

Waiter = tuple[Batch, "asyncio.Future[np.ndarray[Any, Any]]"]


@dataclass
class _ModelQueue:
    """Requests waiting for one model; it exists exactly while its drain task runs."""

    model: LoadedModel
    pending: deque[Waiter] = field(default_factory=deque)
    pending_rows: int = 0


def _timed_call(model: LoadedModel, batch: Batch) -> tuple[np.ndarray[Any, Any], float]:
    """The model's answer and the time of the call alone, in the calling thread.

    Timed here rather than around the thread hop: under load the event loop resumes the
    awaiting request late, and counting that wait as the model's cost kept a cheap model off
    the loop (and its requests batched behind a thread hop) for as long as the load lasted.
    """
    started = time.perf_counter()
    probabilities = run_with_thread_limit(model.predict_proba, batch)
    return probabilities, time.perf_counter() - started


class MicroBatcher:
    def __init__(self, max_rows: int, max_wait_seconds: float) -> None:
        self.max_rows = max_rows
        self.max_wait_seconds = max_wait_seconds
        # Only models with requests waiting or in a call have a queue.
        self._queues: dict[int, _ModelQueue] = {}

    @staticmethod
    def _record_cost(model: LoadedModel, seconds: float) -> None:
        # The running estimate lives on the model (measured first when it was loaded).
        previous = model.call_seconds
        model.call_seconds = (
            seconds if previous is None else previous + COST_SMOOTHING * (seconds - previous)
        )

    async def predict_proba(self, model: LoadedModel, batch: Batch) -> np.ndarray[Any, Any]:
        queue = self._queues.get(id(model))
        if queue is None:
            cost = model.call_seconds
            if cost is None or cost < INLINE_BELOW_SECONDS:
                return self._call_inline(model, batch)
            queue = self._queues[id(model)] = _ModelQueue(model)
            # The task starts once this request awaits below, with the request already queued.
            asyncio.create_task(self._drain(queue), name=f"batch-{model.tag}")  # noqa: RUF006
        future: asyncio.Future[np.ndarray[Any, Any]] = asyncio.get_running_loop().create_future()
        queue.pending.append((batch, future))
        queue.pending_rows += batch.n_rows
        return await future

    def _call_inline(self, model: LoadedModel, batch: Batch) -> np.ndarray[Any, Any]:
        started = time.perf_counter()
        try:
            return model.predict_proba(batch)
        finally:
            self._record_cost(model, time.perf_counter() - started)

    async def _drain(self, queue: _ModelQueue) -> None:
        behind_a_call = False  # the first request found no queue: it never waits
        try:
            while queue.pending:
                if (
                    behind_a_call
                    and self.max_wait_seconds > 0
                    and queue.pending_rows < self.max_rows
                ):
                    await asyncio.sleep(self.max_wait_seconds)
                behind_a_call = True
                taken = self._take(queue)
                combined = Batch.concat([batch for batch, _ in taken])
                try:
                    probabilities, seconds = await anyio.to_thread.run_sync(
                        _timed_call, queue.model, combined
                    )
                except Exception as exc:
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self._record_cost(queue.model, seconds)
                self._hand_out(taken, probabilities)
        finally:
            # Dropping the queue drops its reference to the model, so a replaced model can be
            # freed; requests that arrive later start a new one.
            self._queues.pop(id(queue.model), None)

    def _take(self, queue: _ModelQueue) -> list[Waiter]:
        taken: list[Waiter] = []
        rows = 0
        while queue.pending and (not taken or rows + queue.pending[0][0].n_rows <= self.max_rows):
            item = queue.pending.popleft()
            rows += item[0].n_rows
            taken.append(item)
        queue.pending_rows -= rows
        return taken

    @staticmethod
    def _hand_out(taken: list[Waiter], probabilities: np.ndarray[Any, Any]) -> None:
        start = 0
        for batch, future in taken:
            end = start + batch.n_rows
            if not future.done():  # the client may have gone away
                future.set_result(probabilities[start:end])
            start = end
