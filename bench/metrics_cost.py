"""What metrics cost on /predict: the app driven in-process (no HTTP, no network), with the
real metrics and with the container's ``metrics`` provider overridden by NullMetrics.

    .venv/bin/python bench/metrics_cost.py --requests 5000
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from dependency_injector import providers

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_model  # noqa: E402
from inprocess import microseconds, request_times  # noqa: E402

from app.container import Container  # noqa: E402
from app.main import create_app  # noqa: E402
from app.metrics import NullMetrics  # noqa: E402
from app.settings import Settings  # noqa: E402


def _latencies(settings: Settings, body: bytes, requests: int, null: bool) -> list[float]:
    container = Container(settings=settings)
    if null:
        container.metrics.override(providers.Singleton(NullMetrics))
    app = create_app(settings, container=container)
    return asyncio.run(request_times(app, "/predict", body, requests, warm_up=500)).latencies


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
            mean, p50, p99 = microseconds(_latencies(settings, body, requests, null))
            print(f"| {'off' if null else 'on'} | {mean:.0f} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    typer.run(main)
