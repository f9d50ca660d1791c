from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dependency_injector import providers
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from app.container import Container
from app.metrics import (
    CONFIDENCE_BUCKETS,
    HOLD_AT_MOST,
    ServiceMetrics,
    WriteBehind,
    Writes,
    WriteThrough,
    default_writes,
    exposition_registry,
    observe_many,
    render_latest,
)
from app.settings import Settings
from tests.conftest import app_client
from tests.models import sample_rows


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("size", [3, 16, 500])
def test_bulk_observe_equals_one_by_one(size: int) -> None:
    values = np.random.default_rng(size).uniform(0.2, 1.0, size=size)
    values[:2] = [0.5, 1.0]  # values on a bucket bound go to that bucket
    one, bulk = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("c", "c", buckets=CONFIDENCE_BUCKETS, registry=one)
    by_bulk = Histogram("c", "c", buckets=CONFIDENCE_BUCKETS, registry=bulk)
    for value in values.tolist():
        by_one.observe(value)
    observe_many(by_bulk, values)
    expected, got = _samples(one), _samples(bulk)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def _counter_and_histogram(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    counter = Counter("requests", "r", registry=registry)
    histogram = Histogram("seconds", "s", buckets=CONFIDENCE_BUCKETS, registry=registry)
    return counter, histogram


def test_write_behind_holds_writes_until_flushed_then_matches_writing_through() -> None:
    through, behind = CollectorRegistry(), CollectorRegistry()
    writes: dict[str, Writes] = {"through": WriteThrough(), "behind": WriteBehind()}
    values = np.random.default_rng(7).uniform(0.2, 1.0, size=40)
    for name, registry in (("through", through), ("behind", behind)):
        counter, histogram = _counter_and_histogram(registry)
        writes[name].add(counter)
        writes[name].add(counter, 4)
        writes[name].observe(histogram, 0.5)
        writes[name].observe_all(histogram, values[:3])  # few values: observed one by one
        writes[name].observe_all(histogram, values[3:])
    assert _samples(behind)[("requests_total", "")] == 0
    assert _samples(behind)[("seconds_count", "")] == 0
    writes["behind"].flush()
    expected, got = _samples(through), _samples(behind)
    assert expected[("requests_total", "")] == 5
    assert expected[("seconds_count", "")] == 41
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    writes["behind"].flush()  # nothing held: nothing written twice
    assert _samples(behind)[("requests_total", "")] == 5


def test_write_behind_flushes_early_rather_than_hold_more_than_its_bound() -> None:
    registry = CollectorRegistry()
    _, histogram = _counter_and_histogram(registry)
    writes = WriteBehind()
    rows = np.full(100, 0.45)
    for _ in range(HOLD_AT_MOST // 100 - 1):
        writes.observe_all(histogram, rows)
    assert _samples(registry)[("seconds_count", "")] == 0
    writes.observe_all(histogram, rows)  # the bound reached: written without a flush call
    assert _samples(registry)[("seconds_count", "")] == HOLD_AT_MOST
    assert _samples(registry)[("seconds_bucket", "0.5")] == HOLD_AT_MOST


def test_write_behind_loses_no_write_made_from_threads_while_it_flushes() -> None:
    registry = CollectorRegistry()
    counter, histogram = _counter_and_histogram(registry)
    writes = WriteBehind()
    per_thread, threads = 5_000, 4
    start = threading.Barrier(threads + 1)

    def write() -> None:
        start.wait()
        for _ in range(per_thread):
            writes.add(counter)
            writes.observe(histogram, 0.35)

    workers = [threading.Thread(target=write) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    while any(worker.is_alive() for worker in workers):
        writes.flush()
    writes.flush()
    assert _samples(registry)[("requests_total", "")] == per_thread * threads
    assert _samples(registry)[("seconds_bucket", "0.4")] == per_thread * threads


def test_rendering_metrics_first_writes_what_this_process_held_back() -> None:
    metrics = ServiceMetrics(writes=WriteBehind())
    labels = {"handler": "/held-back", "method": "POST", "status": "200"}
    before = REGISTRY.get_sample_value("ml_api_http_requests_total", labels) or 0.0
    metrics.request_started("/held-back", "POST")
    metrics.request_finished("/held-back", "POST", 200, 0.002)
    assert (REGISTRY.get_sample_value("ml_api_http_requests_total", labels) or 0.0) == before
    payload, _ = render_latest()
    assert REGISTRY.get_sample_value("ml_api_http_requests_total", labels) == before + 1
    line = 'ml_api_http_requests_total{handler="/held-back",method="POST",status="200"}'
    assert f"{line} {before + 1}" in payload.decode()


@pytest.mark.parametrize("folder", [True, False])
def test_metrics_are_held_back_in_multiprocess_mode_only(
    folder: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if folder:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert isinstance(default_writes(), WriteBehind if folder else WriteThrough)


async def test_a_worker_writes_what_it_held_back_every_flush_interval(settings: Settings) -> None:
    """No scrape: the worker's own loop writes the held-back request metrics, which is how
    a scrape answered by another worker comes to see them."""
    container = Container(settings=settings.model_copy(update={"metrics_flush_seconds": 0.05}))
    container.metrics.override(providers.Singleton(ServiceMetrics, writes=WriteBehind()))
    labels = {"handler": "/predict", "method": "POST", "status": "200"}
    async with app_client(settings, container) as http:
        before = REGISTRY.get_sample_value("ml_api_http_requests_total", labels) or 0.0
        response = await http.post("/predict", json={"instances": sample_rows(1)})
        assert response.status_code == 200
        deadline = time.monotonic() + 10
        while REGISTRY.get_sample_value("ml_api_http_requests_total", labels) != before + 1:
            assert time.monotonic() < deadline, "the held-back request count was never written"
            await asyncio.sleep(0.02)  # the flush runs on its own clock: nothing to await


def test_a_multiprocess_exposition_writes_what_was_held_back_before_reading_the_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The stream consumer serves /metrics from this registry through prometheus-client's
    own server, which never calls render_latest."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    counter, _ = _counter_and_histogram(registry)
    writes = WriteBehind()
    writes.add(counter, 3)
    exposed = exposition_registry()
    assert _samples(registry)[("requests_total", "")] == 0
    list(exposed.collect())
    assert _samples(registry)[("requests_total", "")] == 3
