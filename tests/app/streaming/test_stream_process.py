"""Real ``ml-api stream`` processes against the real broker: SIGKILL mid-stream loses nothing
once a successor runs; SIGTERM drains, commits exactly what was answered and exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.app.streaming.conftest import Topics
from tests.kafka_broker import (
    StreamProcess,
    TansuBroker,
    TopicReader,
    committed,
    header,
    high_watermarks,
    produce,
    producer,
)
from tests.models import sample_rows

pytestmark = pytest.mark.e2e

BODY = orjson.dumps({"instances": sample_rows(2, offset=10)})


def source(record: Any) -> tuple[int, int]:
    return int(header(record, "ml-api-source-partition") or b""), int(
        header(record, "ml-api-source-offset") or b""
    )


class Traffic:
    """Requests at a steady pace (20 every 20 ms) until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.sent: list[tuple[int, int]] = []
        self._bootstrap = bootstrap
        self._topic = topic
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        client = producer(self._bootstrap)
        await client.start()
        try:
            while not self._stop.is_set():
                n = len(self.sent)
                acks = [
                    await client.send(self._topic, BODY, key=b"req-%d" % (n + i)) for i in range(20)
                ]
                self.sent.extend((m.partition, m.offset) for m in await asyncio.gather(*acks))
                await asyncio.sleep(0.02)  # the pace of the traffic
        finally:
            await client.stop()

    async def finish(self) -> list[tuple[int, int]]:
        self._stop.set()
        await self._task
        return self.sent


def stream_process(
    registry_dir: Path,
    broker: TansuBroker,
    topics: Topics,
    log: Path,
    env: dict[str, str] | None = None,
) -> StreamProcess:
    return StreamProcess(
        str(registry_dir),
        broker.bootstrap,
        input_topic=topics.input,
        output_topic=topics.output,
        error_topic=topics.error,
        group=topics.group,
        log_path=log,
        env=env,
    )


async def ended(process: StreamProcess, sig: signal.Signals) -> int:
    """Signal the process and wait for its exit code off the event loop, which keeps the
    traffic and the reader going meanwhile."""
    return await asyncio.to_thread(process.end_with, sig)


async def until_answered(reader: TopicReader, wanted: set[tuple[int, int]]) -> list[Any]:
    while not wanted <= {source(r) for r in reader.records}:
        await reader.read(len(reader.records) + 1, within=90)
    return reader.records


@pytest.mark.slow
async def test_a_killed_consumer_loses_nothing_once_another_runs(
    registry_dir: Path, topics: Topics, kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    first = stream_process(registry_dir, kafka_broker, topics, tmp_path / "first.log").start()
    second = stream_process(registry_dir, kafka_broker, topics, tmp_path / "second.log")
    try:
        async with TopicReader(bootstrap, topics.output) as reader:
            warm_up = await produce(bootstrap, topics.input, [(b"w", BODY, ())] * 20)
            await until_answered(reader, set(warm_up))  # the first consumer runs
            traffic = Traffic(bootstrap, topics.input)
            await reader.read(len(reader.records) + 200)
            assert await ended(first, signal.SIGKILL) == -signal.SIGKILL  # mid-stream
            sent = {*warm_up, *await traffic.finish()}
            while_down = await produce(bootstrap, topics.input, [(b"d", BODY, ())] * 100)
            await asyncio.to_thread(second.start)
            answers = await until_answered(reader, sent | set(while_down))
            assert await ended(second, signal.SIGTERM) == 0
    finally:
        first.stop()
        second.stop()

    # Every request answered at least once: those in flight or uncommitted when the first
    # consumer died, and those sent while none ran.
    assert {source(a) for a in answers} == sent | set(while_down)


@pytest.mark.slow  # starting `ml-api stream` alone takes 5-30 s on a busy two-core machine
async def test_sigterm_drains_commits_what_was_answered_and_exits_zero(
    registry_dir: Path, topics: Topics, kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    bootstrap = kafka_broker.bootstrap
    # As in the image: multiprocess metrics in a folder that does not exist yet.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = tmp_path / "stream.log"
    process = stream_process(registry_dir, kafka_broker, topics, log, env).start()
    try:
        async with TopicReader(bootstrap, topics.output) as reader:
            warm_up = await produce(bootstrap, topics.input, [(b"w", BODY, ())] * 20)
            await until_answered(reader, set(warm_up))
            traffic = Traffic(bootstrap, topics.input)
            await reader.read(len(reader.records) + 100)
            async with httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{process.metrics_port}/metrics"
                metrics = (await client.get(url)).text
            assert f'ml_api_stream_messages_consumed_total{{topic="{topics.input}"}}' in metrics
            assert await ended(process, signal.SIGTERM) == 0  # while requests keep coming
            sent = [*warm_up, *await traffic.finish()]
            total = await reader.total()
            answers = await reader.read(total)
    finally:
        process.stop()

    offsets = await committed(bootstrap, topics.group, topics.input, 3)
    answered = [source(a) for a in answers]
    taken = {(p, o) for p, o in sent if o < (offsets[p] or 0)}
    assert len(answered) == len(set(answered))  # once each
    assert set(answered) == taken  # what was committed is exactly what was answered
    assert len(taken) < len(sent)  # requests kept arriving after the stop
    assert sum(high for high in (await high_watermarks(bootstrap, topics.input)).values()) == len(
        sent
    )
