"""The stream consumer against a real Kafka-protocol broker (Tansu on 127.0.0.1), in process:
one answer per request, refusals on the error topic, back-pressure, hot swaps, metrics."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from dependency_injector import providers
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.container import Container
from app.serving.runtime import Runtime
from app.settings import Settings
from app.streaming.messages import (
    ERROR_CODE,
    ERROR_MESSAGE,
    ERROR_REASON,
    MODEL_TAG,
    ROUTING_KEY,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
)
from tests.app.streaming.conftest import StreamRun, Topics, eventually, settings_for
from tests.conftest import app_client
from tests.fakes import GatedRuntime, RuntimeSwappingLoader
from tests.kafka_broker import (
    TansuBroker,
    TopicReader,
    committed,
    header,
    high_watermarks,
    produce,
    producer,
)
from tests.local_server import free_port
from tests.models import model_frame, sample_rows, trained


def body(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"instances": rows})


def oip_body(row: dict[str, Any]) -> bytes:
    """The row as an OIP v2 request with the pandas codec: one input per feature."""
    inputs = [
        {
            "name": name,
            "shape": [1],
            "datatype": "BYTES"
            if isinstance(value, str) or (value is None and name in {"island", "sex"})
            else "FP64",
            "data": [value],
        }
        for name, value in row.items()
    ]
    return orjson.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs})


def source(record: Any) -> tuple[int, int]:
    partition, offset = header(record, SOURCE_PARTITION), header(record, SOURCE_OFFSET)
    assert partition is not None
    assert offset is not None
    return int(partition), int(offset)


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_every_request_gets_exactly_one_answer_keeping_key_and_order(
    stream_settings: Settings, topics: Topics, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    messages = [
        (f"user-{i % 10}".encode(), body(sample_rows(1 + i % 3, offset=i)), [("trace", b"%d" % i)])
        for i in range(120)
    ]
    sent = await produce(bootstrap, topics.input, messages)
    processed = metric("ml_api_stream_processing_seconds_count")

    run = StreamRun(Container(settings=stream_settings))
    try:
        async with TopicReader(bootstrap, topics.output) as reader:
            answers = await reader.read(len(messages))
            assert await run.stop() == 0
            assert await reader.total() == len(messages)  # exactly one answer each
    finally:
        await run.abandon()

    by_source = {source(a): a for a in answers}
    assert set(by_source) == set(sent)
    for (key, value, headers), where in zip(messages, sent, strict=True):
        got = by_source[where]
        document = orjson.loads(got.value)
        rows = orjson.loads(value)["instances"]
        assert got.key == key
        assert document["request_id"] == key.decode()
        assert document["model_tag"] == "base"
        assert header(got, MODEL_TAG) == b"base"
        expected = trained("logreg").predict(model_frame(rows)).tolist()
        assert [p["label"] for p in document["predictions"]] == expected
        assert header(got, "trace") == headers[0][1]  # the request's headers are kept

    # The answers of one key, in the order of its requests, on one output partition.
    requests_of: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for (key, _, _), where in zip(messages, sent, strict=True):
        requests_of[key].append(where)
    for key, wheres in requests_of.items():
        mine = sorted((a for a in answers if a.key == key), key=lambda a: a.offset)
        assert len({a.partition for a in mine}) == 1
        assert [source(a) for a in mine] == wheres

    ends = await high_watermarks(bootstrap, topics.input)
    assert await committed(bootstrap, topics.group, topics.input, 3) == ends
    assert metric("ml_api_stream_messages_consumed_total", {"topic": topics.input}) == 120
    produced = {"topic": topics.output, "kind": "answer"}
    assert metric("ml_api_stream_messages_produced_total", produced) == 120
    assert metric("ml_api_stream_processing_seconds_count") - processed == 120


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None
    reason: str | None  # None: answered
    headers: tuple[tuple[str, bytes], ...] = ()
    names: str = ""  # the message must name this


ROW = sample_rows(1, offset=3)[0]
CASES = [
    Case("good", body([ROW]), None),
    Case("not JSON", b'{"instances": [', "malformed_json"),
    Case("JSON but not an object", b"[1, 2]", "malformed_body"),
    Case("instances not a list", b'{"instances": "rows"}', "malformed_body", names="list"),
    Case("unknown top-level field", orjson.dumps({"instances": [ROW], "x": 1}), "malformed_body"),
    Case("wrong type", body([{**ROW, "body_mass_g": "heavy"}]), "wrong_type", names="body_mass_g"),
    Case(
        "missing feature",
        body([{k: v for k, v in ROW.items() if k != "island"}]),
        "missing_feature",
        names="island",
    ),
    Case("too many rows", body(sample_rows(6)), "too_many_rows", names="ML_API_MAX_ROWS"),
    Case("no rows", body([]), "empty"),
    Case(
        "OIP v2 input without data",
        orjson.dumps({"inputs": [{"name": "island", "shape": [1], "datatype": "BYTES"}]}),
        "malformed_body",
        names='"data" must be a list',
    ),
    Case("good OIP v2, pandas codec", oip_body(ROW), None),
    Case("no value", None, "empty_message"),
    Case("routing key too long", body([ROW]), "invalid_key", ((ROUTING_KEY, b"k" * 300),)),
    Case("good with a routing key", body([ROW]), None, ((ROUTING_KEY, b"user-7"),)),
    Case("good at the end", body(sample_rows(2, offset=200)), None),
]


async def test_bad_messages_go_to_the_error_topic_and_the_partition_moves_on(
    registry_dir: Any, topics: Topics, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    settings = settings_for(registry_dir, bootstrap, topics, max_rows=5)
    messages = [(f"case-{i}".encode(), c.value, c.headers) for i, c in enumerate(CASES)]
    # All on one partition: a bad message must not hold up the good ones behind it.
    sent = await produce(bootstrap, topics.input, messages, partition=0)
    refused = [c for c in CASES if c.reason is not None]
    before = {
        c.reason: metric("ml_api_stream_errors_total", {"reason": str(c.reason)}) for c in refused
    }

    run = StreamRun(Container(settings=settings))
    try:
        async with (
            TopicReader(bootstrap, topics.output) as answers,
            TopicReader(bootstrap, topics.error) as errors,
        ):
            good = await answers.read(len(CASES) - len(refused))
            bad = await errors.read(len(refused))
            assert await run.stop() == 0
            assert await answers.total() == len(good)
            assert await errors.total() == len(bad)
    finally:
        await run.abandon()

    outcome = {source(r): r for r in [*good, *bad]}
    assert set(outcome) == set(sent)
    for case, (key, value, headers), where in zip(CASES, messages, sent, strict=True):
        got = outcome[where]
        assert got.key == key, case.name
        if case.reason is None:
            assert got.topic == topics.output, case.name
            continue
        assert got.topic == topics.error, case.name
        assert header(got, ERROR_REASON) == case.reason.encode(), case.name
        assert header(got, ERROR_CODE), case.name
        message = (header(got, ERROR_MESSAGE) or b"").decode()
        assert message, case.name
        assert case.names in message, case.name
        assert got.value == value, case.name  # the original payload, to replay once fixed
        for name, content in headers:
            assert header(got, name) == content
    assert await committed(bootstrap, topics.group, topics.input, 1) == {0: len(CASES)}
    for reason, count in before.items():
        expected = sum(1 for c in refused if c.reason == reason)
        assert metric("ml_api_stream_errors_total", {"reason": str(reason)}) - count == expected


async def test_fetching_pauses_at_the_in_flight_limit_and_resumes(
    registry_dir: Any, topics: Topics, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    settings = settings_for(
        registry_dir, bootstrap, topics, stream_max_in_flight=4, stream_batch_max_messages=2
    )
    gate = threading.Event()

    def gated(runtime: Runtime) -> Runtime:
        return GatedRuntime(runtime, gate)

    container = Container(settings=settings)
    container.model_loader.override(providers.Object(RuntimeSwappingLoader({"base": gated})))
    messages = [(b"k-%d" % i, body([ROW]), ()) for i in range(30)]
    sent = await produce(bootstrap, topics.input, messages, partition=0)

    run = StreamRun(container)
    consumer = run.consumer
    try:
        async with TopicReader(bootstrap, topics.output) as reader:
            await eventually(lambda: consumer.paused, 60, "fetching paused")
            assert consumer.in_flight == 4
            assert metric("ml_api_stream_in_flight") == 4
            assert metric("ml_api_stream_paused") == 1
            gate.set()
            answers = await reader.read(len(messages))
            assert await run.stop() == 0
            assert await reader.total() == len(messages)
    finally:
        gate.set()
        await run.abandon()
    assert sorted(source(a) for a in answers) == sent
    for partition in {a.partition for a in answers}:  # answers leave in request order
        mine = sorted((a for a in answers if a.partition == partition), key=lambda a: a.offset)
        assert [source(a) for a in mine] == sorted(source(a) for a in mine)
    assert metric("ml_api_stream_paused") == 0


async def test_hot_swap_mid_stream_switches_the_tag_once_without_a_gap(
    stream_settings: Settings, topics: Topics, kafka_broker: TansuBroker, auth: dict[str, str]
) -> None:
    bootstrap = kafka_broker.bootstrap
    sent: list[tuple[int, int]] = []
    swapped = asyncio.Event()

    async def keep_producing() -> None:
        """Steady traffic: 10 requests every 20 ms, then 60 more once the swap is seen."""
        client = producer(bootstrap)
        await client.start()
        try:
            i = 0
            while not swapped.is_set():
                acks = [
                    await client.send(topics.input, body([ROW]), key=b"r-%d" % (i + j))
                    for j in range(10)
                ]
                sent.extend((m.partition, m.offset) for m in await asyncio.gather(*acks))
                i += 10
                await asyncio.sleep(0.02)  # the pace of the traffic, not a wait for anything
            acks = [
                await client.send(topics.input, body([ROW]), key=b"r-%d" % (i + j))
                for j in range(60)
            ]
            sent.extend((m.partition, m.offset) for m in await asyncio.gather(*acks))
        finally:
            await client.stop()

    run = StreamRun(Container(settings=stream_settings))
    try:
        async with (
            app_client(stream_settings) as http,
            TopicReader(bootstrap, topics.output) as reader,
        ):
            traffic = asyncio.create_task(keep_producing())
            await reader.read(50)  # the stream runs
            response = await http.post("/replace_ml_model", json={"tag": "boost"}, headers=auth)
            assert response.status_code == 200, response.text
            while not swapped.is_set():
                for record in await reader.read(len(reader.records) + 1):
                    if header(record, MODEL_TAG) == b"boost":
                        swapped.set()
            await traffic
            answers = await reader.read(len(sent))
            assert await run.stop() == 0
            assert await reader.total() == len(sent)
    finally:
        await run.abandon()

    tag_of = {source(a): orjson.loads(a.value)["model_tag"] for a in answers}
    assert set(tag_of) == set(sent)  # no request unanswered
    for partition in range(3):
        tags = [tag_of[w] for w in sorted(w for w in sent if w[0] == partition)]
        switch = tags.index("boost") if "boost" in tags else len(tags)
        assert set(tags[:switch]) <= {"base"}, partition
        assert set(tags[switch:]) <= {"boost"}, partition  # never back
        assert (tags[0], tags[-1]) == ("base", "boost"), partition  # it switched mid-stream
    assert {"base", "boost"} <= set(tag_of.values())


async def test_metrics_are_served_for_prometheus_with_the_lag_of_each_partition(
    registry_dir: Any, topics: Topics, kafka_broker: TansuBroker
) -> None:
    bootstrap = kafka_broker.bootstrap
    port = free_port()
    settings = settings_for(registry_dir, bootstrap, topics, stream_metrics_port=port)
    messages = [(b"m-%d" % i, body([ROW]) if i % 5 else b"nope", ()) for i in range(20)]
    await produce(bootstrap, topics.input, messages)

    def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("ml_api_stream_")
        }

    run = StreamRun(Container(settings=settings))
    try:
        async with TopicReader(bootstrap, topics.output) as reader:
            await reader.read(16)
            lags = {
                ("ml_api_stream_consumer_lag", (("partition", str(p)), ("topic", topics.input)))
                for p in range(3)
            }
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(100):  # the lag is measured every second
                    samples = scraped((await client.get("/metrics")).text)
                    idle = samples.get(("ml_api_stream_in_flight", ())) == 0
                    if idle and all(samples.get(lag) == 0 for lag in lags):
                        break
                    await asyncio.sleep(0.1)
        assert all(samples[lag] == 0 for lag in lags), samples
        assert samples[("ml_api_stream_messages_consumed_total", (("topic", topics.input),))] == 20
        answered = (("kind", "answer"), ("topic", topics.output))
        refused = (("kind", "error"), ("topic", topics.error))
        assert samples[("ml_api_stream_messages_produced_total", answered)] == 16
        assert samples[("ml_api_stream_messages_produced_total", refused)] == 4
        assert samples[("ml_api_stream_in_flight", ())] == 0
        assert ("ml_api_stream_processing_seconds_count", ()) in samples
        assert samples[("ml_api_stream_errors_total", (("reason", "malformed_json"),))] >= 4
        assert await run.stop() == 0
    finally:
        await run.abandon()


async def test_an_unreachable_broker_stops_the_consumer_with_exit_code_1(
    registry_dir: Any, topics: Topics
) -> None:
    settings = settings_for(registry_dir, f"127.0.0.1:{free_port()}", topics)
    run = StreamRun(Container(settings=settings))
    try:
        assert await run.wait() == 1
    finally:
        await run.abandon()
    assert run.consumer.failure is not None
    assert "bootstrap" in str(run.consumer.failure).lower()


async def test_a_consumer_joining_mid_stream_takes_partitions_without_a_loss_or_a_repeat(
    stream_settings: Settings, topics: Topics, kafka_broker: TansuBroker
) -> None:
    """The first consumer answers and commits what it took before it hands partitions over,
    so its successor starts exactly where it stopped."""
    bootstrap = kafka_broker.bootstrap
    sent: list[tuple[int, int]] = []
    stop_traffic = asyncio.Event()

    async def keep_producing() -> None:
        client = producer(bootstrap)
        await client.start()
        try:
            i = 0
            while not stop_traffic.is_set():
                acks = [
                    await client.send(topics.input, body([ROW]), key=b"j-%d" % (i + j))
                    for j in range(10)
                ]
                sent.extend((m.partition, m.offset) for m in await asyncio.gather(*acks))
                i += 10
                await asyncio.sleep(0.02)  # the pace of the traffic
        finally:
            await client.stop()

    first = StreamRun(Container(settings=stream_settings))
    second: StreamRun | None = None
    try:
        async with TopicReader(bootstrap, topics.output) as reader:
            traffic = asyncio.create_task(keep_producing())
            await reader.read(50)  # the first consumer has every partition
            assert len(first.consumer.assigned) == 3
            second = StreamRun(Container(settings=stream_settings))
            one, two = first.consumer, second.consumer
            await eventually(
                lambda: len(two.assigned) > 0 and len(one.assigned) + len(two.assigned) == 3,
                60,
                "the two consumers share the partitions",
            )
            await reader.read(len(reader.records) + 50)  # both answer
            stop_traffic.set()
            await traffic
            answers = await reader.read(len(sent))
            assert await second.stop() == 0
            assert await first.stop() == 0
            assert await reader.total() == len(sent)  # none answered twice
    finally:
        stop_traffic.set()
        await first.abandon()
        if second is not None:
            await second.abandon()
    assert sorted(source(a) for a in answers) == sorted(sent)


async def test_an_answer_too_large_to_produce_is_refused_instead(
    stream_settings: Settings, topics: Topics, kafka_broker: TansuBroker
) -> None:
    """9,000 rows: the answer (~1.1 MB) exceeds the producer's 1 MB request limit, and so does
    the request itself (~1.4 MB), so the refusal goes without the request's value."""
    bootstrap = kafka_broker.bootstrap
    rows = (sample_rows(300) * 30)[:9000]
    big = body(rows)
    assert len(big) > 1024 * 1024
    client = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, max_request_size=4 * 1024 * 1024
    )
    await client.start()
    try:
        await client.send_and_wait(topics.input, big, key=b"big", partition=0)
        await client.send_and_wait(topics.input, body([ROW]), key=b"small", partition=0)
    finally:
        await client.stop()

    run = StreamRun(Container(settings=stream_settings))
    try:
        async with (
            TopicReader(bootstrap, topics.output) as answers,
            TopicReader(bootstrap, topics.error) as errors,
        ):
            [small] = await answers.read(1)
            [refused] = await errors.read(1)
            assert await run.stop() == 0
    finally:
        await run.abandon()
    assert small.key == b"small"
    assert (refused.key, refused.value) == (b"big", None)
    assert header(refused, ERROR_REASON) == b"answer_too_large"
    assert b"value dropped" in (header(refused, ERROR_MESSAGE) or b"")
    assert await committed(bootstrap, topics.group, topics.input, 1) == {0: 2}
