"""Fixtures of the stream consumer tests: topics of their own on the session's broker, settings
pointing at them, and an in-process ``serve_stream`` run."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.container import Container
from app.settings import Settings
from app.streaming.consumer import StreamConsumer
from app.streaming.runner import serve_stream
from tests.conftest import ADMIN_TOKEN
from tests.kafka_broker import (
    TEST_FETCH_MAX_WAIT_MS,
    TEST_SESSION_TIMEOUT_MS,
    TansuBroker,
    create_topics,
)

INPUT_PARTITIONS = 3


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    error: str
    group: str


@pytest.fixture
async def topics(kafka_broker: TansuBroker) -> Topics:
    name = f"t{uuid.uuid4().hex[:10]}"
    made = Topics(f"{name}.requests", f"{name}.predictions", f"{name}.errors", f"{name}-group")
    await create_topics(
        kafka_broker.bootstrap, {made.input: INPUT_PARTITIONS, made.output: 3, made.error: 1}
    )
    return made


def settings_for(
    registry_dir: Path, bootstrap: str, topics: Topics, **overrides: object
) -> Settings:
    values: dict[str, object] = {
        "registry_url": str(registry_dir),
        "admin_token": ADMIN_TOKEN,
        "poll_seconds": 0.2,
        "drift_interval_seconds": 0.5,
        "kafka_bootstrap": bootstrap,
        "kafka_session_timeout_ms": TEST_SESSION_TIMEOUT_MS,
        "kafka_fetch_max_wait_ms": TEST_FETCH_MAX_WAIT_MS,
        "stream_input_topic": topics.input,
        "stream_output_topic": topics.output,
        "stream_error_topic": topics.error,
        "stream_group": topics.group,
        "stream_commit_interval_ms": 100,
        "stream_metrics_port": 0,
        "shutdown_grace_seconds": 10,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def stream_settings(registry_dir: Path, kafka_broker: TansuBroker, topics: Topics) -> Settings:
    return settings_for(registry_dir, kafka_broker.bootstrap, topics)


class StreamRun:
    """``serve_stream`` of a container as a task of the test's event loop."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.consumer: StreamConsumer = container.stream_consumer()
        self._task = asyncio.create_task(serve_stream(container, handle_signals=False))

    async def stop(self) -> int:
        """What SIGTERM does: drain, commit, leave; the exit code."""
        self.consumer.request_stop()
        return await asyncio.wait_for(self._task, 30)

    async def wait(self) -> int:
        """The exit code, once it stops by itself (a failure)."""
        return await asyncio.wait_for(self._task, 60)

    async def abandon(self) -> None:
        if not self._task.done():
            self.consumer.request_stop()
            await asyncio.wait_for(self._task, 30)


async def eventually(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a state of the consumer that no event announces (its in-flight count)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)
