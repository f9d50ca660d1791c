"""The app driven in-process, through ASGI calls (no HTTP, no network): the time of each
request, for the scripts that measure what a part of the request path costs.

Used by ``oip_profile.py``, ``metrics_cost.py`` and ``experiments_profile.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp

# Requests before the timed ones: the first ones warm caches up.
WARM_UP = 300


@dataclass(frozen=True)
class Timings:
    latencies: list[float]  # seconds of each timed request
    # CPU seconds of the whole process (every thread: flushes, mirrors) over the timed ones.
    cpu_seconds: float

    @property
    def cpu_microseconds_per_request(self) -> float:
        return self.cpu_seconds / len(self.latencies) * 1e6


async def request_times(
    app: ASGIApp,
    path: str,
    body: bytes,
    requests: int,
    *,
    warm_up: int = WARM_UP,
    profile: bool = False,
    prepare: Callable[[ASGIApp], Awaitable[None]] | None = None,
    yield_every: int | None = None,
) -> Timings:
    """Seconds of each of ``requests`` JSON POSTs of ``body`` to ``path``, after the app's
    start-up, ``prepare(app)`` and ``warm_up`` untimed requests; every answer must be 200.

    ``profile`` prints a pyinstrument profile of the timed requests; ``yield_every`` lets the
    loop run background work (shadows, flushes) every that many requests.
    """
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    timings: list[float] = []
    profiler = None
    cpu_started = 0.0
    async with LifespanManager(app) as manager:
        if prepare is not None:
            await prepare(manager.app)
        for i in range(requests + warm_up):
            if i == warm_up:
                cpu_started = time.process_time()
            if i == warm_up and profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0001, async_mode="disabled")
                profiler.start()
            started = time.perf_counter()
            await manager.app(dict(scope, state={}), receive, send)
            if i >= warm_up:
                timings.append(time.perf_counter() - started)
            if yield_every and i % yield_every == 0:
                await asyncio.sleep(0)
        cpu_seconds = time.process_time() - cpu_started
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    assert set(statuses) == {200}, set(statuses)
    return Timings(timings, cpu_seconds)


def microseconds(timings: list[float]) -> tuple[float, float, float]:
    """Mean, p50 and p99 of ``timings`` (seconds), in microseconds."""
    ordered = sorted(timings)
    return (
        statistics.fmean(ordered) * 1e6,
        ordered[len(ordered) // 2] * 1e6,
        ordered[int(len(ordered) * 0.99)] * 1e6,
    )
