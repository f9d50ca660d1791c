"""Prometheus collectors, declared once, and the helpers that observe them.

Works in prometheus-client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before this
module is imported, as ``ml-api serve`` does): counters and histograms are summed across
workers, gauges use the aggregation noted on each.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 500, 1000, 5000, 10000)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "ml_api_http_requests", "HTTP requests served.", ["handler", "method", "status"]
)
HTTP_DURATION = Histogram(
    "ml_api_http_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["handler", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "ml_api_http_requests_in_progress",
    "HTTP requests being served now.",
    ["handler", "method"],
    multiprocess_mode="livesum",
)
PREDICTIONS = Counter(
    "ml_api_predictions", "Rows predicted, by model and predicted label.", ["model_tag", "label"]
)
CONFIDENCE = Histogram(
    "ml_api_prediction_confidence",
    "Probability of the predicted (top) class, per row.",
    ["model_tag"],
    buckets=CONFIDENCE_BUCKETS,
)
ROWS_PER_REQUEST = Histogram(
    "ml_api_rows_per_request", "Rows in one /predict request.", buckets=ROWS_BUCKETS
)
INVALID_REQUESTS = Counter(
    "ml_api_invalid_requests", "Requests refused because of their input.", ["reason"]
)
UNKNOWN_CATEGORIES = Counter(
    "ml_api_unknown_categories",
    "Category values never seen in training (served, but a sign of drift).",
    ["model_tag", "feature"],
)
MODEL_INFO = Gauge(
    "ml_api_model_info",
    "1 for the experiment this worker serves.",
    ["model_tag", "model_type"],
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "ml_api_model_ready",
    "1 when a model is loaded and serving (minimum over workers).",
    multiprocess_mode="livemin",
)
MODEL_SWAPS = Counter("ml_api_model_swaps", "Model swaps by outcome.", ["result"])
MODEL_LOAD_SECONDS = Histogram(
    "ml_api_model_load_seconds",
    "Time to load and verify a model.",
    buckets=LOAD_BUCKETS,
)
INPUT_DRIFT_PSI = Gauge(
    "ml_api_input_drift_psi",
    "Population stability index of recent inputs against the training distribution.",
    ["model_tag", "feature"],
    multiprocess_mode="livemax",
)


class ServiceMetrics:
    """The observations the service makes; one instance per process, from the container."""

    def __init__(self) -> None:
        self._info: tuple[str, str] | None = None
        # Labelled children, looked up once: labels() validates and locks on every call,
        # which on the request path costs more than the observation itself.
        self._children: dict[tuple[Any, ...], Any] = {}
        MODEL_READY.set(0)
        # Series that exist from the start make increase() and alerts see their first event.
        for result in ("success", "failure"):
            MODEL_SWAPS.labels(result)

    # -- model lifecycle -------------------------------------------------------------
    def model_activated(self, tag: str, model_type: str, load_seconds: float) -> None:
        if self._info is not None:
            MODEL_INFO.labels(*self._info).set(0)
        self._info = (tag, model_type)
        MODEL_INFO.labels(tag, model_type).set(1)
        MODEL_READY.set(1)
        MODEL_LOAD_SECONDS.observe(load_seconds)

    def swap_finished(self, succeeded: bool) -> None:
        MODEL_SWAPS.labels("success" if succeeded else "failure").inc()

    # -- traffic -----------------------------------------------------------------------
    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_started(self, handler: str, method: str) -> None:
        self._child(HTTP_IN_PROGRESS, handler, method).inc()

    def request_finished(self, handler: str, method: str, status: int, seconds: float) -> None:
        self._child(HTTP_IN_PROGRESS, handler, method).dec()
        self._child(HTTP_REQUESTS, handler, method, str(status)).inc()
        self._child(HTTP_DURATION, handler, method).observe(seconds)

    def request_invalid(self, reason: str) -> None:
        INVALID_REQUESTS.labels(reason).inc()

    def rows_predicted(
        self,
        tag: str,
        labels: list[str],
        confidence: np.ndarray[Any, Any],
        unknown_categories: Mapping[str, int],
    ) -> None:
        ROWS_PER_REQUEST.observe(len(labels))
        if len(labels) == 1:
            self._child(PREDICTIONS, tag, labels[0]).inc()
        else:
            for label, count in Tally(labels).items():
                self._child(PREDICTIONS, tag, label).inc(count)
        observe_many(self._child(CONFIDENCE, tag), confidence)
        for feature, count in unknown_categories.items():
            self._child(UNKNOWN_CATEGORIES, tag, feature).inc(count)

    def drift_measured(self, tag: str, psi_by_feature: Mapping[str, float]) -> None:
        for feature, psi in psi_by_feature.items():
            INPUT_DRIFT_PSI.labels(tag, feature).set(psi)


# Above this many values one numpy pass beats a Python loop of observe() calls.
BULK_OBSERVE_FROM = 16


def observe_many(histogram: Any, values: np.ndarray[Any, Any]) -> None:
    """``histogram.observe`` for each value, as one increment per bucket for large batches.

    prometheus-client keeps per-bucket (non-cumulative) counts and a sum; a 1,000-row request
    would otherwise pay 1,000 locked observe() calls. Falls back to the loop if the client's
    internals ever change.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if len(values) < BULK_OBSERVE_FROM or bounds is None or buckets is None or total is None:
        for value in values.tolist():
            histogram.observe(value)
        return
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    total.inc(float(values.sum()))


class NullMetrics(ServiceMetrics):
    """Observes nothing: what the service costs without metrics (benchmarks override the
    container's ``metrics`` provider with it)."""

    def __init__(self) -> None:
        self._info = None
        self._children = {}

    def model_activated(self, tag: str, model_type: str, load_seconds: float) -> None:
        return None

    def swap_finished(self, succeeded: bool) -> None:
        return None

    def request_started(self, handler: str, method: str) -> None:
        return None

    def request_finished(self, handler: str, method: str, status: int, seconds: float) -> None:
        return None

    def request_invalid(self, reason: str) -> None:
        return None

    def rows_predicted(
        self,
        tag: str,
        labels: list[str],
        confidence: np.ndarray[Any, Any],
        unknown_categories: Mapping[str, int],
    ) -> None:
        return None

    def drift_measured(self, tag: str, psi_by_feature: Mapping[str, float]) -> None:
        return None


def render_latest() -> tuple[bytes, str]:
    """The exposition text: aggregated over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    """Drop a finished worker's live gauges so they stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
