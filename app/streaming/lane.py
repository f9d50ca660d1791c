"""One assigned partition's messages, in offset order, from answer to committed offset.

Messages of a partition are scored concurrently (their answers are tasks, so rows of many
messages share model calls), but produced strictly in offset order, so the answers of one key
keep the order of its requests. The lane awaits the broker's acknowledgements in the same
order and moves ``acked_upto`` past each: everything below it is answered and acknowledged,
which is the only offset it is safe to commit (at least once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.streaming.messages import Outgoing

logger = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, message: Outgoing) -> Awaitable[Outgoing]:
        """Hand ``message`` to the producer (calls keep their order on a partition). The
        awaitable completes with what the broker acknowledged (the message, or a refusal
        that replaced it) and raises when delivery failed for good."""
        ...


@dataclass(frozen=True)
class Pending:
    offset: int
    answer: asyncio.Task[Outgoing]
    taken: float  # time.perf_counter() when the message was taken off the consumer


class PartitionLane:
    def __init__(
        self,
        partition: tuple[str, int],
        sender: Sender,
        on_acked: Callable[[Pending, Outgoing], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self.partition = partition
        self.acked_upto: int | None = None  # next offset to commit
        self.committed: int | None = None  # what the last commit of this lane said
        self._sender = sender
        self._on_acked = on_acked
        self._on_failed = on_failed
        self._waiting: asyncio.Queue[Pending] = asyncio.Queue()
        self._delivering: asyncio.Queue[tuple[Pending, Awaitable[Outgoing]]] = asyncio.Queue()
        self._unacked: deque[Pending] = deque()
        self._drained = asyncio.Event()
        self._drained.set()
        name = f"{partition[0]}-{partition[1]}"
        self._tasks = [
            asyncio.create_task(self._produce_in_order(), name=f"produce-{name}"),
            asyncio.create_task(self._confirm_in_order(), name=f"confirm-{name}"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def push(self, pending: Pending) -> None:
        self._unacked.append(pending)
        self._drained.clear()
        self._waiting.put_nowait(pending)

    async def drained(self) -> None:
        """Every message pushed so far is answered and acknowledged."""
        await self._drained.wait()

    def close(self) -> int:
        """Stop this lane (its partition was revoked, or the consumer stops); returns how many
        messages were left unacknowledged: the next owner of the partition gets them again."""
        for task in self._tasks:
            task.cancel()
        left = len(self._unacked)
        for pending in self._unacked:
            pending.answer.cancel()
        self._unacked.clear()
        self._drained.set()
        return left

    async def _produce_in_order(self) -> None:
        while True:
            pending = await self._waiting.get()
            message = await pending.answer
            delivery = await self._sender.send(message)
            self._delivering.put_nowait((pending, delivery))

    async def _confirm_in_order(self) -> None:
        while True:
            pending, delivery = await self._delivering.get()
            sent = await delivery
            self.acked_upto = pending.offset + 1
            self._unacked.popleft()  # confirmed in the order pushed: this is ``pending``
            if not self._unacked:
                self._drained.set()
            self._on_acked(pending, sent)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("partition %s:%s stopped: %r", *self.partition, error)
            self._on_failed(error)
