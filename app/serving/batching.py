"""Adaptive micro-batching: concurrent requests for one model share one model call.

Per-call overhead dominates a model call on a few rows, so rows from requests that arrive
while the model is busy are scored together in the next call. Nothing waits when there is no
queue: an idle model is called at once, and a model whose call is cheaper than a thread hop
(an ONNX graph, typically) is called inline on the event loop, once for all the requests that
reach it in the same turn of the loop. Queues are per model object, so a batch never mixes
models, and each request gets back exactly its own rows, from the model it took, across a hot
swap too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np

from app.serving.inputs import Batch
from app.serving.model import LoadedModel
from app.serving.runtime import run_with_thread_limit

# Below this cost per call a thread hop (and batching) costs more than it saves.
INLINE_BELOW_SECONDS = 0.0005
# Weight of the newest value in the running averages: the cost of a call (the call alone),
# and the requests a turn of the loop gathered.
SMOOTHING = 0.2
# A turn of the loop that gathers a single request only delays it. While turns gather fewer
# than this many requests on average, requests are called at once, and every PROBE_EVERY-th
# one opens a turn again to see whether others join it.
SHARE_A_TURN_FROM = 1.5
PROBE_EVERY = 16

Waiter = tuple[Batch, "asyncio.Future[np.ndarray[Any, Any]]"]


@dataclass
class _ModelQueue:
    """Requests waiting for one model; it exists exactly while its drain task runs."""

    model: LoadedModel
    pending: deque[Waiter] = field(default_factory=deque)
    pending_rows: int = 0


def _clock(model: LoadedModel) -> Callable[[], float]:
    """What a call of ``model`` is timed by: the calling thread's CPU time for a runtime that
    only computes (ONNX Runtime, scikit-learn), else wall time.

    Wall time counts what is not the model's: a preemption (one slow call moved a cheap model
    off the loop), and in a worker thread the wait for the GIL after the native call returns,
    while the loop holds it (at 32 clients that wait kept the light model's batched calls over
    the inline bound). A runtime that may block, such as a test's gated model, keeps wall time,
    so its waits still keep it off the loop.
    """
    return time.thread_time if getattr(model.runtime, "computes_only", False) else time.perf_counter


def _timed_call(model: LoadedModel, batch: Batch) -> tuple[np.ndarray[Any, Any], float]:
    """The model's answer and the time of the call alone, in the calling thread.

    Timed here rather than around the thread hop: under load the event loop resumes the
    awaiting request late, and counting that wait as the model's cost kept a cheap model off
    the loop (and its requests batched behind a thread hop) for as long as the load lasted.
    """
    clock = _clock(model)
    started = clock()
    probabilities = run_with_thread_limit(model.predict_proba, batch)
    return probabilities, clock() - started


class MicroBatcher:
    def __init__(self, max_rows: int, max_wait_seconds: float) -> None:
        self.max_rows = max_rows
        self.max_wait_seconds = max_wait_seconds
        # Only models with requests waiting or in a call have a queue.
        self._queues: dict[int, _ModelQueue] = {}
        # Requests for inline models gathered in this turn of the event loop, per model.
        self._this_turn: dict[int, _ModelQueue] = {}
        self._gathered = 1.0  # running average of the requests a turn gathered
        self._since_probe = 0

    @staticmethod
    def _record_cost(model: LoadedModel, seconds: float) -> None:
        # The running estimate lives on the model (measured first when it was loaded).
        previous = model.call_seconds
        model.call_seconds = (
            seconds if previous is None else previous + SMOOTHING * (seconds - previous)
        )

    async def predict_proba(self, model: LoadedModel, batch: Batch) -> np.ndarray[Any, Any]:
        queue = self._queues.get(id(model))
        if queue is None:
            cost = model.call_seconds
            if cost is None:
                return self._call_inline(model, batch)
            if cost < INLINE_BELOW_SECONDS:
                if id(model) in self._this_turn or self._worth_a_turn():
                    return await self._inline_this_turn(model, batch)
                return self._call_inline(model, batch)
            queue = self._queues[id(model)] = _ModelQueue(model)
            # The task starts once this request awaits below, with the request already queued.
            asyncio.create_task(self._drain(queue), name=f"batch-{model.tag}")  # noqa: RUF006
        future: asyncio.Future[np.ndarray[Any, Any]] = asyncio.get_running_loop().create_future()
        queue.pending.append((batch, future))
        queue.pending_rows += batch.n_rows
        return await future

    def _call_inline(self, model: LoadedModel, batch: Batch) -> np.ndarray[Any, Any]:
        clock = _clock(model)
        started = clock()
        try:
            return model.predict_proba(batch)
        finally:
            self._record_cost(model, clock() - started)

    def _worth_a_turn(self) -> bool:
        if self._gathered >= SHARE_A_TURN_FROM:
            return True
        self._since_probe += 1
        if self._since_probe < PROBE_EVERY:
            return False
        self._since_probe = 0
        return True

    async def _inline_this_turn(self, model: LoadedModel, batch: Batch) -> np.ndarray[Any, Any]:
        """The model's answer from one inline call shared by every request that reaches it
        in this turn of the event loop.

        Requests whose bodies arrived together reach the model in the same turn. A model on
        many trees pays most of its call in fetching them into the CPU cache, and pays it
        once per call, not per row; a request alone waits only for the rest of the turn.
        """
        loop = asyncio.get_running_loop()
        turn = self._this_turn.get(id(model))
        if turn is None:
            turn = self._this_turn[id(model)] = _ModelQueue(model)
            # Runs after the callbacks already due in this turn: the other requests' steps.
            loop.call_soon(self._end_turn, id(model))
        future: asyncio.Future[np.ndarray[Any, Any]] = loop.create_future()
        turn.pending.append((batch, future))
        turn.pending_rows += batch.n_rows
        return await future

    def _end_turn(self, key: int) -> None:
        turn = self._this_turn.pop(key)
        self._gathered += SMOOTHING * (len(turn.pending) - self._gathered)
        while turn.pending:
            self._call_shared(turn.model, self._take(turn))

    def _call_shared(self, model: LoadedModel, taken: list[Waiter]) -> None:
        clock = _clock(model)
        started = clock()
        try:
            probabilities = model.predict_proba(Batch.concat([batch for batch, _ in taken]))
        except Exception as exc:
            if len(taken) > 1:  # one request's rows must not fail the others: each alone
                for waiter in taken:
                    self._call_shared(model, [waiter])
            else:
                _fail(taken[0][1], exc)
            return
        # Per request: what decides inline or thread is what each request costs the loop.
        self._record_cost(model, (clock() - started) / len(taken))
        self._hand_out(taken, probabilities)

    async def _drain(self, queue: _ModelQueue) -> None:
        behind_a_call = False  # the first request found no queue: it never waits
        try:
            while queue.pending:
                cost = queue.model.call_seconds
                if behind_a_call and cost is not None and cost < INLINE_BELOW_SECONDS:
                    # Cheap again: what is queued is served on the loop, and the queue ends.
                    # Under steady load it would never run empty, so the model would stay
                    # behind a thread hop for as long as the load lasted.
                    while queue.pending:
                        self._call_shared(queue.model, self._take(queue))
                    break
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
                    if len(taken) > 1:  # one request's rows must not fail the others
                        await self._call_each_alone(queue.model, taken)
                    else:
                        _fail(taken[0][1], exc)
                    continue
                # Per request, as a shared inline call counts it. Counted per call, the
                # estimate of a cheap model batched behind a thread hop grows with the batch,
                # and one slow call kept it off the loop for as long as the load lasted.
                self._record_cost(queue.model, seconds / len(taken))
                self._hand_out(taken, probabilities)
        finally:
            # Dropping the queue drops its reference to the model, so a replaced model can be
            # freed; requests that arrive later start a new one.
            self._queues.pop(id(queue.model), None)

    @classmethod
    async def _call_each_alone(cls, model: LoadedModel, taken: list[Waiter]) -> None:
        for waiter in taken:
            try:
                probabilities, _ = await anyio.to_thread.run_sync(_timed_call, model, waiter[0])
            except Exception as exc:
                _fail(waiter[1], exc)
            else:
                cls._hand_out([waiter], probabilities)

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


def _fail(future: asyncio.Future[np.ndarray[Any, Any]], exc: Exception) -> None:
    if not future.done():  # the client may have gone away
        future.set_exception(exc)
