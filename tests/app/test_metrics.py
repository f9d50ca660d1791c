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
    HOLD_ITEMS_AT_MOST,
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


def _series(prefix: str, tag: str) -> dict[tuple[str, str, str, str], float]:
    """Every sample of the process registry named ``prefix``* for model ``tag``."""
    return {
        (s.name, s.labels["role"], s.labels.get("label", ""), s.labels.get("le", "")): s.value
        for metric in REGISTRY.collect()
        for s in metric.samples
        if s.name.startswith(prefix) and s.labels.get("model_tag") == tag
    }


def _rows_per_request() -> dict[str, float]:
    return {
        s.labels.get("le", "sum"): s.value
        for metric in REGISTRY.collect()
        for s in metric.samples
        if s.name in ("ml_api_rows_per_request_bucket", "ml_api_rows_per_request_sum")
    }


def test_answers_held_back_are_counted_as_if_written_one_by_one() -> None:
    """Held answers are counted in bulk at the flush: by top label, confidence per row, and
    rows per request (not for shadows), the same as each request written at once."""
    rng = np.random.default_rng(3)
    answers = [rng.dirichlet([1.0, 1.0, 1.0], size=n) for n in (1, 7, 100, 2)]
    answers[0][0] = [0.2, 0.3, 0.5]  # a top class exactly on a confidence bucket bound
    classes = ["x", "y", "z"]
    results: dict[str, tuple[dict[tuple[str, str, str, str], float], dict[str, float]]] = {}
    for name, writes in (("through", WriteThrough()), ("behind", WriteBehind())):
        metrics = ServiceMetrics(writes=writes)
        rows_before = _rows_per_request()
        for answer in answers:
            metrics.rows_predicted(f"{name}-held", "primary", classes, answer, {})
            metrics.rows_predicted(f"{name}-held", "shadow", classes, answer, {})
        metrics.flush()
        rows_after = _rows_per_request()
        rows = {le: rows_after[le] - rows_before.get(le, 0.0) for le in rows_after}
        series = {**_series("ml_api_predictions", f"{name}-held")}
        series |= _series("ml_api_prediction_confidence", f"{name}-held")
        results[name] = series, rows
    expected_series, expected_rows = results["through"]
    got_series, got_rows = results["behind"]
    tops = np.concatenate([a.argmax(axis=1) for a in answers])
    for role in ("primary", "shadow"):
        assert expected_series[("ml_api_predictions_total", role, "y", "")] == np.sum(tops == 1)
        assert expected_series[("ml_api_prediction_confidence_bucket", role, "", "0.5")] >= 1
    assert expected_rows["+Inf"] == len(answers)  # the shadows' answers are not requests
    assert expected_rows["sum"] == 110
    assert got_rows == pytest.approx(expected_rows)
    assert got_series.keys() == expected_series.keys()
    for key, value in expected_series.items():
        assert got_series[key] == pytest.approx(value), key


def test_write_behind_applies_what_it_holds_in_order_and_flushes_at_its_bound() -> None:
    writes = WriteBehind()
    applied: list[tuple[str, list[int]]] = []

    def apply(key: str, values: list[int]) -> None:
        applied.append((key, values))

    writes.hold(apply, "a", 1, size=10)
    writes.hold(apply, "b", 2, size=10)
    writes.hold(apply, "a", 3, size=10)
    assert applied == []
    writes.flush()
    assert sorted(applied) == [("a", [1, 3]), ("b", [2])]
    writes.flush()  # nothing held: nothing applied twice
    assert len(applied) == 2
    writes.hold(apply, "a", 4, size=HOLD_AT_MOST - 1)
    assert len(applied) == 2
    writes.hold(apply, "a", 5, size=1)  # the bound reached: applied without a flush call
    assert applied[-1] == ("a", [4, 5])
    for value in range(HOLD_ITEMS_AT_MOST - 1):  # many small values: bounded by their number
        writes.hold(apply, "b", value, size=1)
    assert len(applied) == 3
    writes.hold(apply, "b", -1, size=1)
    assert applied[-1] == ("b", [*range(HOLD_ITEMS_AT_MOST - 1), -1])
