"""What metrics cost on /predict: the app driven in-process (no HTTP, no network), with the
real metrics and with the container's ``metrics`` provider overridden by NullMetrics.

    .venv/bin/python bench/metrics_cost.py --requests 5000
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated, Any

import typer
from asgi_lifespan import LifespanManager
from dependency_injector import providers

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402

from app.container import Container  # noqa: E402
from app.main import create_app  # noqa: E402
from app.metrics import NullMetrics  # noqa: E402
from app.settings import Settings  # noqa: E402


async def _latencies(settings: Settings, body: bytes, requests: int, null: bool) -> list[float]:
    container = Container(settings=settings)
    if null:
        container.metrics.override(providers.Singleton(NullMetrics))
    app = create_app(settings, container=container)
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict",
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
    async with LifespanManager(app) as manager:
        for i in range(requests + 500):
            started = time.perf_counter()
            await manager.app(dict(scope, state={}), receive, send)
            if i >= 500:  # the first ones warm caches up
                timings.append(time.perf_counter() - started)
    assert set(statuses) == {200}, set(statuses)
    return timings


def main(requests: Annotated[int, typer.Option(min=100, max=100_000)] = 5000) -> None:
    import orjson

    with tempfile.TemporaryDirectory() as tmp:
        x = bench_model.build(Path(tmp) / "registry")
        settings = Settings(registry_url=str(Path(tmp) / "registry"))
        body = orjson.dumps({"instances": [bench_model.row(x, 3)]})
        print("in-process single-row /predict (no HTTP), microseconds per request")
        print("| metrics | mean | p50 | p99 |")
        print("|---|---|---|---|")
        for null in (False, True, False, True):
            timings = asyncio.run(_latencies(settings, body, requests, null))
            timings.sort()
            mean = statistics.fmean(timings) * 1e6
            p50 = timings[len(timings) // 2] * 1e6
            p99 = timings[int(len(timings) * 0.99)] * 1e6
            print(f"| {'off' if null else 'on'} | {mean:.0f} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    typer.run(main)
