"""The one module that talks to Kafka (aiokafka): the clients, fetching, committing, producing.

Imported only when a stream consumer starts, so HTTP workers never load aiokafka.

- **Consumer**: a member of the group, auto-commit off (the stream consumer commits what was
  answered); a group without committed offsets starts at the earliest message, so requests
  produced before the first consumer ever ran are answered too.
- **Producer**: acknowledged by all in-sync replicas; no idempotence (not every
  Kafka-compatible broker supports it, and delivery is at least once anyway). One request in
  flight per broker, so retries never reorder a partition.
- **Too large**: an answer the producer or broker refuses as too large is replaced by its
  refusal (the request, to the error topic, reason ``answer_too_large``); a refusal too large
  for the error topic goes without its value. Any other delivery failure is fatal: the
  consumer stops without committing past it, and its successor answers again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, MessageSizeTooLargeError

from app.streaming.config import CLIENT_ID, StreamConfig
from app.streaming.messages import ERROR_MESSAGE, Outgoing, Record

logger = logging.getLogger(__name__)

Partition = tuple[str, int]


class Rebalance(Protocol):
    def partitions_assigned(self, partitions: list[Partition]) -> None: ...
    async def partitions_revoked(self, partitions: list[Partition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Rebalance) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.partitions_revoked(sorted((tp.topic, tp.partition) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner.partitions_assigned(sorted((tp.topic, tp.partition) for tp in assigned))


class KafkaLink:
    """The consumer and the producer of one stream consumer."""

    def __init__(self, config: StreamConfig) -> None:
        self._config = config
        self._consumer: Any = None
        self._producer: Any = None

    async def start(self, rebalance: Rebalance) -> None:
        """Connect the producer, then join the group (so no partition is taken before its
        answers can be sent). Raises KafkaError when the brokers cannot be reached."""
        config = self._config
        self._producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap,
            client_id=CLIENT_ID,
            acks="all",
            enable_idempotence=False,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap,
            client_id=CLIENT_ID,
            group_id=config.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=max(100, config.session_timeout_ms // 3),
            max_poll_records=config.batch_max_messages,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
        )
        self._consumer.subscribe([config.input_topic], listener=_Listener(rebalance))
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        """Leave the group, then deliver what the producer still holds."""
        try:
            if self._consumer is not None:
                await self._consumer.stop()
        finally:
            if self._producer is not None:
                await self._producer.stop()

    # -- consuming ---------------------------------------------------------------------
    async def fetch(self, max_records: int, wait_seconds: float) -> dict[Partition, list[Record]]:
        """Up to ``max_records`` buffered messages; waits up to ``wait_seconds`` only when
        none are buffered."""
        batches = await self._consumer.getmany(
            timeout_ms=max(0, int(wait_seconds * 1000)), max_records=max_records
        )
        return {(tp.topic, tp.partition): records for tp, records in batches.items() if records}

    def pause(self) -> None:
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.paused())

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit ``offsets`` (the next offset to read, per partition); False, logged, when
        the group is rebalancing or the broker cannot be reached (the next commit says it)."""
        try:
            await self._consumer.commit(
                {TopicPartition(*partition): offset for partition, offset in offsets.items()}
            )
        except (KafkaError, IllegalStateError) as exc:
            logger.warning("offset commit failed (will be retried): %r", exc)
            return False
        return True

    async def lags(self) -> dict[Partition, int]:
        """High watermark minus position, for each assigned partition fetched from yet."""
        lags: dict[Partition, int] = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = await self._consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile
                continue
            lags[(tp.topic, tp.partition)] = max(0, highwater - position)
        return lags

    # -- producing ---------------------------------------------------------------------
    async def send(self, message: Outgoing) -> Awaitable[Outgoing]:
        try:
            ack = await self._producer.send(
                message.topic, value=message.value, key=message.key, headers=message.headers
            )
        except MessageSizeTooLargeError as exc:
            return await self.send(_instead(message, exc))
        return self._delivered(message, ack)

    async def _delivered(self, message: Outgoing, ack: Awaitable[Any]) -> Outgoing:
        try:
            await ack
        except MessageSizeTooLargeError as exc:
            replacement = await self.send(_instead(message, exc))
            return await replacement
        return message


def _instead(message: Outgoing, exc: Exception) -> Outgoing:
    """What to send when ``message`` is too large: its fallback, or the same refusal without
    its value."""
    if message.fallback is not None:
        logger.warning("answer too large (%r): the request goes to the error topic", exc)
        return message.fallback()
    if message.value is not None:
        logger.warning("refusal too large (%r): sent without the request's value", exc)
        headers = [
            (name, value + b" (value dropped: too large for the error topic)")
            if name == ERROR_MESSAGE
            else (name, value)
            for name, value in message.headers
        ]
        return dataclasses.replace(message, value=None, headers=headers)
    raise exc
