"""The stream consumer: requests from the input topic, answers to the output topic, refusals
to the error topic, at least once.

- **Delivery.** An offset is committed only once the answer (or refusal) of that message and
  of every message before it on its partition was acknowledged by the broker. A consumer that
  dies uncommitted is followed by one that answers those messages again: never none, rarely
  twice.
- **Bad messages.** A message that cannot be decoded or fails validation is refused: it goes
  to the error topic with the reason in headers and is committed like an answer, so it never
  blocks its partition nor stops the consumer.
- **Back-pressure.** At most ``max_in_flight`` messages are taken and not yet acknowledged;
  when that many are, fetching pauses, and resumes once a good share of them is done.
- **Micro-batching.** Messages are taken up to a batch at a time and scored concurrently, so
  the prediction service's micro-batcher scores the rows of many messages in one model call
  whenever the model is busy; answers still go out in offset order per partition.
- **Hot swaps.** Each message takes the deployment's plan when it is scored, as an HTTP
  request does; the worker lifecycle keeps the plan in step with the registry.
- **Stopping.** On request (SIGTERM) fetching stops, what is in flight is answered (up to the
  drain time), the offsets are committed and the consumer leaves its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from app.errors import InvalidInput, ServiceError
from app.metrics import StreamMetrics
from app.serving.deployment import Deployment
from app.serving.prediction import PredictionService
from app.streaming.config import StreamConfig
from app.streaming.lane import PartitionLane, Pending
from app.streaming.messages import Outgoing, Record, answer, refusal, request_id_of, routing_key_of
from app.streaming.payload import PayloadDecoder

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
# How long one fetch waits when nothing is buffered (it returns as soon as messages arrive):
# bounds how late a stop request is noticed.
IDLE_FETCH_SECONDS = 0.5
# How often the consumer lag (and the in-flight gauge, also set on pause and resume) is
# measured.
LAG_EVERY_SECONDS = 1.0
# How often to look again for a model to serve, before the first one is loaded.
READY_CHECK_SECONDS = 0.1


class Broker(Protocol):
    """What the consumer needs of Kafka (:class:`app.streaming.kafka.KafkaLink`)."""

    async def start(self, rebalance: StreamConsumer) -> None: ...
    async def stop(self) -> None: ...
    async def fetch(
        self, max_records: int, wait_seconds: float
    ) -> dict[Partition, list[Record]]: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    async def commit(self, offsets: Mapping[Partition, int]) -> bool: ...
    async def lags(self) -> dict[Partition, int]: ...
    async def send(self, message: Outgoing) -> Awaitable[Outgoing]: ...


def kafka_link(config: StreamConfig) -> Broker:
    from app.streaming.kafka import KafkaLink  # aiokafka only where a stream runs

    return KafkaLink(config)


class StreamConsumer:
    def __init__(
        self,
        service: PredictionService,
        deployment: Deployment,
        decoder: PayloadDecoder,
        metrics: StreamMetrics,
        config: StreamConfig,
        connect: Callable[[StreamConfig], Broker] = kafka_link,
    ) -> None:
        self._service = service
        self._deployment = deployment
        self._decoder = decoder
        self._metrics = metrics
        self._config = config
        self._connect = connect
        self._broker: Broker | None = None
        self._lanes: dict[Partition, PartitionLane] = {}
        self._rebalances = 0  # revocations so far
        self._in_flight = 0
        self._paused = False
        self._stop = asyncio.Event()
        self._room = asyncio.Event()  # in-flight dropped to the resume mark
        self._idle = asyncio.Event()  # nothing in flight
        self._idle.set()
        self._progress = asyncio.Event()  # something was acknowledged since the last commit
        self._commit_lock = asyncio.Lock()
        self.failure: BaseException | None = None
        self.finished = asyncio.Event()

    # -- state, for metrics and tests ----------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def assigned(self) -> list[Partition]:
        return sorted(self._lanes)

    def request_stop(self) -> None:
        self._stop.set()
        self._room.set()

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Wait for a model, join the group, consume until asked to stop (or a delivery
        fails), then drain, commit and leave. Run as an extra loop of the worker lifecycle;
        ``finished`` is set when it returns, ``failure`` says why if it failed."""
        config = self._config
        try:
            if not await self._until_serving():
                return
            self._metrics.topics_known(config.input_topic, config.output_topic, config.error_topic)
            broker = self._broker = self._connect(config)
            await broker.start(self)
            logger.info(
                "stream consumer in group %r: %s -> %s (refusals: %s)",
                config.group,
                config.input_topic,
                config.output_topic,
                config.error_topic,
            )
            committing = asyncio.create_task(self._commit_continually(), name="stream-commit")
            try:
                await self._consume(broker)
                await self._drain()
            finally:
                committing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committing
                await self._commit()
                for lane in list(self._lanes.values()):
                    self._close_lane(lane)
                self._metrics.in_flight(self._in_flight, paused=False)
                await broker.stop()
        except Exception as exc:
            self._fail(exc)
        finally:
            self.finished.set()

    async def _until_serving(self) -> bool:
        """Join the group only with a model to answer (the lifecycle retries the first load)."""
        if not self._deployment.ready:
            logger.info("waiting for a model before consuming")
        while not self._deployment.ready and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), READY_CHECK_SECONDS)
        return not self._stop.is_set()

    async def _consume(self, broker: Broker) -> None:
        lag_due = 0.0
        while not self._stop.is_set():
            room = self._config.max_in_flight - self._in_flight
            if room <= 0:
                self._pause(broker)
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), LAG_EVERY_SECONDS)
            else:
                self._resume(broker)
                for partition, records in (await self._fetch(broker, room)).items():
                    self._take(broker, partition, records)
            if time.monotonic() >= lag_due:
                lag_due = time.monotonic() + LAG_EVERY_SECONDS
                self._metrics.lag(await broker.lags())
                self._metrics.in_flight(self._in_flight, self._paused)

    async def _fetch(self, broker: Broker, room: int) -> dict[Partition, list[Record]]:
        """Up to a batch of messages; with a batch wait, linger for more while some came."""
        limit = min(room, self._config.batch_max_messages)
        batches = await broker.fetch(limit, IDLE_FETCH_SECONDS)
        count = sum(len(records) for records in batches.values())
        if count == 0 or count >= limit or self._config.batch_max_wait_seconds <= 0:
            return batches
        deadline = time.monotonic() + self._config.batch_max_wait_seconds
        while count < limit and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            rebalances = self._rebalances
            more = await broker.fetch(limit - count, left)
            if rebalances != self._rebalances:
                # What came before belongs to an assignment that is gone: the partitions'
                # next owners (maybe this consumer) fetch it again from the committed offsets.
                batches, count = {}, 0
            for partition, records in more.items():
                batches.setdefault(partition, []).extend(records)
                count += len(records)
        return batches

    def _take(self, broker: Broker, partition: Partition, records: list[Record]) -> None:
        # The Kafka consumer returns messages of assigned partitions only, possibly before
        # the assignment callback ran.
        lane = self._lanes.get(partition) or self._open_lane(broker, partition)
        taken = time.perf_counter()
        for record in records:
            lane.push(Pending(record.offset, asyncio.create_task(self._answer(record)), taken))
        self._in_flight += len(records)
        self._idle.clear()
        self._metrics.consumed(partition[0], len(records))

    async def _answer(self, record: Record) -> Outgoing:
        """The answer to one message, or its refusal; never raises."""
        config = self._config
        try:
            # Nothing is awaited before predict() takes the plan, so messages take it in the
            # order they were taken: across a hot swap a partition's answers switch once.
            decoded = self._decoder.decode(record.value)
            prediction = await self._service.predict(
                decoded, request_id=request_id_of(record), key=routing_key_of(record)
            )
            return answer(record, config.output_topic, prediction, config.error_topic)
        except InvalidInput as exc:
            return refusal(
                record, config.error_topic, reason=exc.reason, code=exc.code, message=exc.message
            )
        except ServiceError as exc:
            logger.warning("message %s-%s@%s refused: %s", *_where(record), exc.message)
            return refusal(
                record, config.error_topic, reason=exc.code, code=exc.code, message=exc.message
            )
        except Exception as exc:
            logger.exception("message %s-%s@%s failed", *_where(record))
            return refusal(
                record,
                config.error_topic,
                reason="internal_error",
                code="internal_error",
                message=f"the model failed on this message ({type(exc).__name__})",
            )

    # -- acknowledgements, back-pressure, commits ---------------------------------------
    def _acked(self, pending: Pending, sent: Outgoing) -> None:
        seconds = time.perf_counter() - pending.taken
        if sent.reason is None:
            self._metrics.answered(sent.topic, seconds)
        else:
            self._metrics.refused(sent.topic, sent.reason, seconds)
        self._released(1)
        self._progress.set()

    def _released(self, count: int) -> None:
        self._in_flight -= count
        if self._in_flight <= self._config.resume_below:
            self._room.set()
        if self._in_flight == 0:
            self._idle.set()

    def _pause(self, broker: Broker) -> None:
        if not self._paused:
            broker.pause()
            self._paused = True
            self._metrics.in_flight(self._in_flight, self._paused)

    def _resume(self, broker: Broker) -> None:
        if self._paused:
            broker.resume()
            self._paused = False
            self._metrics.in_flight(self._in_flight, self._paused)

    async def _commit_continually(self) -> None:
        """Commit soon after acknowledgements, at most once per commit interval."""
        while True:
            await self._progress.wait()
            self._progress.clear()
            await self._commit()
            await asyncio.sleep(self._config.commit_interval_seconds)

    async def _commit(self, lanes: list[PartitionLane] | None = None) -> None:
        if self._broker is None:
            return
        async with self._commit_lock:
            chosen = list(self._lanes.values()) if lanes is None else lanes
            offsets = {
                lane.partition: lane.acked_upto
                for lane in chosen
                if lane.acked_upto is not None and lane.acked_upto != lane.committed
            }
            if offsets and await self._broker.commit(offsets):
                for lane in chosen:
                    lane.committed = offsets.get(lane.partition, lane.committed)

    async def _drain(self) -> None:
        if self.failure is not None or self._in_flight == 0:
            return
        logger.info("stopping: answering the %d messages in flight", self._in_flight)
        try:
            await asyncio.wait_for(self._idle.wait(), self._config.drain_seconds)
        except TimeoutError:
            logger.warning(
                "%d messages still unanswered after %.0f s: they will be delivered again",
                self._in_flight,
                self._config.drain_seconds,
            )

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
            logger.error("stream consumer stops: %r", error)
        self.request_stop()

    # -- rebalances (called by the Kafka consumer) ---------------------------------------
    def partitions_assigned(self, partitions: list[Partition]) -> None:
        assert self._broker is not None
        for partition in partitions:
            if partition not in self._lanes:
                self._open_lane(self._broker, partition)
        logger.info("assigned %s", ", ".join(f"{t}-{p}" for t, p in partitions) or "nothing")

    def _open_lane(self, broker: Broker, partition: Partition) -> PartitionLane:
        lane = self._lanes[partition] = PartitionLane(partition, broker, self._acked, self._fail)
        return lane

    async def partitions_revoked(self, partitions: list[Partition]) -> None:
        """Before another consumer takes them: answer what was taken, commit, let go."""
        self._rebalances += 1
        lanes = [self._lanes[p] for p in partitions if p in self._lanes]
        if not lanes:
            return
        if self.failure is None:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(lane.drained() for lane in lanes)),
                    self._config.drain_seconds,
                )
            except TimeoutError:
                logger.warning("revoked partitions still had unanswered messages")
        await self._commit(lanes)
        for lane in lanes:
            self._close_lane(lane)

    def _close_lane(self, lane: PartitionLane) -> None:
        self._lanes.pop(lane.partition, None)
        left = lane.close()
        if left:
            self._released(left)


def _where(record: Record) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset
