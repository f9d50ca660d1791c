"""Prometheus collectors, declared once, and the helpers that observe them.

Works in prometheus-client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before this
module is imported, as ``ml-api serve`` does): counters and histograms are summed across
workers, gauges use the aggregation noted on each. There every write is a locked write into a
memory-mapped file, so the per-request counters and histograms are held in the process and
written in one go (:class:`WriteBehind`): when this process renders ``/metrics`` and every
``ML_API_METRICS_FLUSH_SECONDS`` (another worker's last second may reach a scrape late, never
lost). Without multiprocess mode they are written at once (:class:`WriteThrough`).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

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
DIFF_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
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
    "ml_api_predictions",
    "Rows predicted, by model, role and predicted label.",
    ["model_tag", "role", "label"],
)
CONFIDENCE = Histogram(
    "ml_api_prediction_confidence",
    "Probability of the predicted (top) class, per row.",
    ["model_tag", "role"],
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
MODEL_ERRORS = Counter(
    "ml_api_model_errors",
    "Model calls that failed (a candidate's failure is answered by the primary).",
    ["model_tag", "role"],
)
MODEL_INFERENCE = Histogram(
    "ml_api_model_inference_seconds",
    "Time from a request reaching its model to its probabilities (micro-batching included); "
    "its _count is the requests each model served (shadows: mirrored requests scored).",
    ["model_tag", "role"],
    buckets=LATENCY_BUCKETS,
)
MODEL_INFO = Gauge(
    "ml_api_model_info",
    "1 for each experiment this worker serves, by role.",
    ["model_tag", "model_type", "role"],
    multiprocess_mode="livemax",
)
MODEL_READY = Gauge(
    "ml_api_model_ready",
    "1 when every model of the deployment is loaded and serving (minimum over workers).",
    multiprocess_mode="livemin",
)
TRAFFIC_WEIGHT = Gauge(
    "ml_api_traffic_weight_percent",
    "Configured percent of requests per arm (shadows: percent mirrored).",
    ["model_tag", "role"],
    multiprocess_mode="livemax",
)
MODEL_SWAPS = Counter("ml_api_model_swaps", "Changes of the primary model, by outcome.", ["result"])
DEPLOYMENT_CHANGES = Counter(
    "ml_api_deployment_changes",
    "Changes of the deployment spec made through this service, by action and outcome.",
    ["action", "result"],
)
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
SHADOW_REQUESTS = Counter(
    "ml_api_shadow_requests",
    "Mirrored requests whose shadow answer was compared with the primary's.",
    ["primary_tag", "shadow_tag"],
)
SHADOW_ROWS = Counter(
    "ml_api_shadow_rows", "Rows compared between primary and shadow.", ["primary_tag", "shadow_tag"]
)
SHADOW_AGREEMENTS = Counter(
    "ml_api_shadow_agreements",
    "Compared rows on which the shadow predicted the primary's label.",
    ["primary_tag", "shadow_tag"],
)
SHADOW_PROBABILITY_DIFF = Histogram(
    "ml_api_shadow_probability_diff",
    "Largest absolute difference in class probability between primary and shadow, per row.",
    ["primary_tag", "shadow_tag"],
    buckets=DIFF_BUCKETS,
)
SHADOW_LATENCY = Histogram(
    "ml_api_shadow_latency_seconds",
    "Model time of a mirrored request, for the primary and for the shadow (whose mirrored "
    "requests are scored together in one call).",
    ["primary_tag", "shadow_tag", "model"],
    buckets=LATENCY_BUCKETS,
)
SHADOW_DROPPED = Counter(
    "ml_api_shadow_dropped",
    "Mirrored requests dropped (the shadow queue was full), never the primary's answer.",
    ["shadow_tag", "reason"],
)
SHADOW_ERRORS = Counter(
    "ml_api_shadow_errors", "Shadow model calls that failed.", ["primary_tag", "shadow_tag"]
)
GUARD_EVENTS = Counter(
    "ml_api_canary_guard_events",
    "Candidates taken out of the traffic by the canary guard, by reason.",
    ["model_tag", "reason"],
)

FEEDBACK_ITEMS = Counter(
    "ml_api_feedback_items",
    "Feedback items received, by outcome (accepted, duplicate, or why they were refused).",
    ["outcome"],
)
FEEDBACK = Counter(
    "ml_api_feedback",
    "Feedback joined to a prediction, by model, role and result (correct/incorrect label, or "
    "reward).",
    ["model_tag", "role", "result"],
)
FEEDBACK_REWARD = Histogram(
    "ml_api_feedback_reward",
    "Rewards received as feedback, per model.",
    ["model_tag", "role"],
    buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
)
FEEDBACK_DELAY = Histogram(
    "ml_api_feedback_delay_seconds",
    "Time from a prediction to its feedback.",
    ["model_tag"],
    buckets=(0.1, 1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400),
)
OFFLINE_ACCURACY = Gauge(
    "ml_api_model_offline_accuracy",
    "Accuracy recorded at training time (meta.json metrics.accuracy), per serving model.",
    ["model_tag"],
    multiprocess_mode="livemax",
)
FEEDBACK_STORE_ERRORS = Counter(
    "ml_api_feedback_store_errors",
    "Operations on the feedback store that failed (predictions kept flowing).",
    ["operation"],
)
FEEDBACK_RECORDS_DROPPED = Counter(
    "ml_api_feedback_records_dropped",
    "Prediction records dropped before reaching the feedback store (its buffer was full).",
)
BANDIT_PROBABILITY_BEST = Gauge(
    "ml_api_bandit_probability_best",
    "Posterior probability that an arm of a bandit is the best one.",
    ["model_tag"],
    multiprocess_mode="livemax",
)
BANDIT_POSTERIOR_MEAN = Gauge(
    "ml_api_bandit_posterior_mean",
    "Posterior mean success rate of an arm of a bandit.",
    ["model_tag"],
    multiprocess_mode="livemax",
)
AB_SUCCESS_RATE = Gauge(
    "ml_api_ab_success_rate",
    "Success rate from labelled feedback per arm of the running split, with its confidence "
    "bounds (bound: rate, low, high).",
    ["model_tag", "bound"],
    multiprocess_mode="livemax",
)
AB_P_VALUE = Gauge(
    "ml_api_ab_p_value",
    "p-value of the difference between a candidate and the primary (test: z or welch).",
    ["model_tag", "test"],
    multiprocess_mode="livemax",
)
AB_SRM_P_VALUE = Gauge(
    "ml_api_ab_srm_p_value",
    "p-value of the sample-ratio check of the running split (low: traffic is not split as "
    "configured).",
    multiprocess_mode="livemax",
)

RETRAIN_DECISIONS = Counter(
    "ml_api_retrain_decisions",
    "Decisions of the retraining trigger on monitoring alerts, by outcome and reason.",
    ["outcome", "reason"],
)
WORKER_CPU = Gauge(
    "ml_api_worker_cpu_seconds",
    "CPU time (user + system) used by each worker process since it started.",
    multiprocess_mode="liveall",
)
WORKER_RSS = Gauge(
    "ml_api_worker_resident_memory_bytes",
    "Resident memory of each worker process.",
    multiprocess_mode="liveall",
)

STREAM_CONSUMED = Counter(
    "ml_api_stream_messages_consumed",
    "Messages the stream consumer took from its input topic.",
    ["topic"],
)
STREAM_PRODUCED = Counter(
    "ml_api_stream_messages_produced",
    "Messages the stream consumer produced and the broker acknowledged, by topic and kind "
    "(answer or error).",
    ["topic", "kind"],
)
STREAM_ERRORS = Counter(
    "ml_api_stream_errors",
    "Input messages sent to the error topic, by reason (malformed_json, too_many_rows, ...).",
    ["reason"],
)
STREAM_PROCESSING = Histogram(
    "ml_api_stream_processing_seconds",
    "From taking a message off the consumer to the broker's acknowledgement of its answer.",
    buckets=LATENCY_BUCKETS,
)
STREAM_LAG = Gauge(
    "ml_api_stream_consumer_lag",
    "Messages of an assigned input partition not yet taken (high watermark - position).",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
STREAM_IN_FLIGHT = Gauge(
    "ml_api_stream_in_flight",
    "Messages taken but not yet answered and acknowledged.",
    multiprocess_mode="livesum",
)
STREAM_PAUSED = Gauge(
    "ml_api_stream_paused",
    "1 while fetching is paused because the in-flight limit is reached (back-pressure).",
    multiprocess_mode="livemax",
)

ROLES = ("primary", "candidate", "shadow")
RETRAIN_OUTCOMES = (
    ("triggered", "triggered"), ("skipped", "cooldown"), ("skipped", "not_the_primary"),
    ("skipped", "too_few_rows"), ("skipped", "too_few_feedbacks"), ("dry_run", "dry_run"),
    ("failed", "trigger_failed"),
)  # fmt: skip
FEEDBACK_OUTCOMES = (
    "accepted", "duplicate", "malformed_request_id", "forged_request_id", "unknown_request_id",
    "expired_request_id", "invalid_row", "unknown_label", "feedback_store_unavailable",
)  # fmt: skip
GUARD_REASONS = ("error_rate", "latency")
SPEC_ACTIONS = ("put", "replace", "promote", "rollback", "guard")


class ServiceMetrics:
    """The observations the service makes; one instance per process, from the container."""

    def __init__(self, writes: Writes | None = None) -> None:
        self._serving: dict[str, tuple[str, str]] = {}
        self._weights: set[tuple[str, str]] = set()
        # Labelled children, looked up once: labels() validates and locks on every call,
        # which on the request path costs more than the observation itself.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._writes = writes if writes is not None else default_writes()
        MODEL_READY.set(0)
        # Series that exist from the start make increase() and alerts see their first event.
        for result in ("success", "failure"):
            MODEL_SWAPS.labels(result)
            for action in SPEC_ACTIONS:
                DEPLOYMENT_CHANGES.labels(action, result)
        for outcome in FEEDBACK_OUTCOMES:
            FEEDBACK_ITEMS.labels(outcome)
        for outcome, reason in RETRAIN_OUTCOMES:
            RETRAIN_DECISIONS.labels(outcome, reason)
        FEEDBACK_RECORDS_DROPPED.inc(0)
        for operation in ("record", "bandit", "report"):
            FEEDBACK_STORE_ERRORS.labels(operation)

    # -- model lifecycle -------------------------------------------------------------
    def model_loaded(self, load_seconds: float) -> None:
        MODEL_LOAD_SECONDS.observe(load_seconds)

    def deployment_installed(
        self,
        models: Mapping[str, tuple[str, str]],
        shares: Mapping[str, float],
        mirrored: Mapping[str, float],
    ) -> None:
        """``models``: tag -> (model type, role) of everything serving now; ``shares``: the
        percent of traffic per arm; ``mirrored``: the percent mirrored per shadow."""
        for tag, (model_type, role) in self._serving.items():
            if models.get(tag) != (model_type, role):
                MODEL_INFO.labels(tag, model_type, role).set(0)
        for tag, (model_type, role) in models.items():
            MODEL_INFO.labels(tag, model_type, role).set(1)
        weights = {(tag, models[tag][1]): share for tag, share in shares.items()}
        weights |= {(tag, "shadow"): percent for tag, percent in mirrored.items()}
        for key in self._weights - set(weights):
            TRAFFIC_WEIGHT.labels(*key).set(0)
        for key, value in weights.items():
            TRAFFIC_WEIGHT.labels(*key).set(value)
        self._weights = set(weights)
        self._serving = dict(models)
        MODEL_READY.set(1)

    def model_series_known(
        self,
        tag: str,
        role: str,
        categorical: list[str],
        primary: str | None,
        offline_accuracy: float | None = None,
    ) -> None:
        """Create a model's series at zero, so panels show 0 rather than "No data"."""
        self._child(MODEL_INFERENCE, tag, role)
        self._child(MODEL_ERRORS, tag, role)
        for result in ("correct", "incorrect"):
            self._child(FEEDBACK, tag, role, result)
        if offline_accuracy is not None:
            OFFLINE_ACCURACY.labels(tag).set(offline_accuracy)
        for feature in categorical:
            self._child(UNKNOWN_CATEGORIES, tag, feature)
        if role == "candidate":
            for reason in GUARD_REASONS:
                GUARD_EVENTS.labels(tag, reason)
        if role == "shadow" and primary is not None:
            SHADOW_DROPPED.labels(tag, "queue_full")
            for metric in (SHADOW_REQUESTS, SHADOW_ROWS, SHADOW_AGREEMENTS, SHADOW_ERRORS):
                metric.labels(primary, tag)

    def not_ready(self) -> None:
        MODEL_READY.set(0)

    def swap_finished(self, succeeded: bool) -> None:
        MODEL_SWAPS.labels("success" if succeeded else "failure").inc()

    def deployment_changed(self, action: str, succeeded: bool) -> None:
        DEPLOYMENT_CHANGES.labels(action, "success" if succeeded else "failure").inc()

    def guard_took_out(self, tag: str, reason: str) -> None:
        GUARD_EVENTS.labels(tag, reason).inc()

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
        # In progress is written at once: held back, its inc and dec would cancel out unseen.
        self._child(HTTP_IN_PROGRESS, handler, method).dec()
        self._writes.add(self._child(HTTP_REQUESTS, handler, method, str(status)))
        self._writes.observe(self._child(HTTP_DURATION, handler, method), seconds)

    def request_invalid(self, reason: str) -> None:
        INVALID_REQUESTS.labels(reason).inc()

    def model_served(self, tag: str, role: str, seconds: float, requests: int = 1) -> None:
        """``requests`` served by one model call of ``seconds`` (shadows score many at once)."""
        histogram = self._child(MODEL_INFERENCE, tag, role)
        if requests == 1:
            self._writes.observe(histogram, seconds)
        else:
            self._writes.observe_all(histogram, np.full(requests, seconds))

    def model_failed(self, tag: str, role: str) -> None:
        self._child(MODEL_ERRORS, tag, role).inc()

    def rows_predicted(
        self,
        tag: str,
        role: str,
        classes: Sequence[str],
        probabilities: np.ndarray[Any, Any],
        unknown_categories: Mapping[str, int],
    ) -> None:
        """One model answer (a request's, or a shadow call's): its rows by top class, each
        row's confidence (the top class's probability), and, but for shadows, its size.

        The answers are counted in bulk (see :meth:`Writes.hold`): on a held-back flush the
        argmax, max and bucketing of many requests cost about what one request's did.
        """
        key = (tag, role, tuple(classes))
        self._writes.hold(self._count_rows, key, probabilities, probabilities.size)
        for feature, count in unknown_categories.items():
            self._writes.add(self._child(UNKNOWN_CATEGORIES, tag, feature), count)

    def _count_rows(
        self, key: tuple[str, str, tuple[str, ...]], answers: list[np.ndarray[Any, Any]]
    ) -> None:
        # Runs when the writes are due (at once, or at a held-back flush): writes directly.
        tag, role, classes = key
        probabilities = answers[0] if len(answers) == 1 else np.concatenate(answers)
        top = probabilities.argmax(axis=1)
        counts = np.bincount(top, minlength=len(classes)).tolist()
        for label, count in zip(classes, counts, strict=True):
            if count:
                self._child(PREDICTIONS, tag, role, label).inc(count)
        # The top class's probability by index: max(axis=1) takes twice argmax's time.
        confidence = probabilities[np.arange(len(top)), top]
        observe_many(self._child(CONFIDENCE, tag, role), confidence)
        if role != "shadow":
            rows = np.fromiter(map(len, answers), dtype=np.float64, count=len(answers))
            observe_many(ROWS_PER_REQUEST, rows)

    def flush(self) -> None:
        """Write what this process holds back (see :class:`WriteBehind`)."""
        self._writes.flush()

    # -- shadows -----------------------------------------------------------------------
    def shadow_compared(
        self,
        primary: str,
        shadow: str,
        agreed: int,
        diffs: np.ndarray[Any, Any],
        primary_seconds: list[float],
        shadow_seconds: float,
    ) -> None:
        """One shadow call covering ``len(primary_seconds)`` mirrored requests."""
        requests = len(primary_seconds)
        self._child(SHADOW_REQUESTS, primary, shadow).inc(requests)
        self._child(SHADOW_ROWS, primary, shadow).inc(len(diffs))
        self._child(SHADOW_AGREEMENTS, primary, shadow).inc(agreed)
        observe_many(self._child(SHADOW_PROBABILITY_DIFF, primary, shadow), diffs)
        observe_many(
            self._child(SHADOW_LATENCY, primary, shadow, "primary"), np.asarray(primary_seconds)
        )
        observe_many(
            self._child(SHADOW_LATENCY, primary, shadow, "shadow"),
            np.full(requests, shadow_seconds),
        )

    def shadow_dropped(self, shadow: str, reason: str) -> None:
        self._child(SHADOW_DROPPED, shadow, reason).inc()

    def shadow_failed(self, primary: str, shadow: str, requests: int) -> None:
        self._child(SHADOW_ERRORS, primary, shadow).inc(requests)
        self._child(MODEL_ERRORS, shadow, "shadow").inc(requests)

    def drift_measured(self, tag: str, psi_by_feature: Mapping[str, float]) -> None:
        for feature, psi in psi_by_feature.items():
            INPUT_DRIFT_PSI.labels(tag, feature).set(psi)

    # -- feedback ----------------------------------------------------------------------
    def feedback_item(self, outcome: str) -> None:
        self._child(FEEDBACK_ITEMS, outcome).inc()

    def feedback_joined(
        self, tag: str, role: str, correct: bool | None, reward: float | None, delay: float
    ) -> None:
        if correct is not None:
            self._child(FEEDBACK, tag, role, "correct" if correct else "incorrect").inc()
        if reward is not None:
            self._child(FEEDBACK, tag, role, "reward").inc()
            self._child(FEEDBACK_REWARD, tag, role).observe(reward)
        self._child(FEEDBACK_DELAY, tag).observe(max(0.0, delay))

    def feedback_store_failed(self, operation: str) -> None:
        self._child(FEEDBACK_STORE_ERRORS, operation).inc()

    def feedback_records_dropped(self) -> None:
        FEEDBACK_RECORDS_DROPPED.inc()

    def bandit_updated(
        self, probability_best: Mapping[str, float], posterior_mean: Mapping[str, float]
    ) -> None:
        for tag, value in probability_best.items():
            BANDIT_PROBABILITY_BEST.labels(tag).set(value)
        for tag, value in posterior_mean.items():
            BANDIT_POSTERIOR_MEAN.labels(tag).set(value)

    def retrain_decided(self, outcome: str, reason: str) -> None:
        RETRAIN_DECISIONS.labels(outcome, reason).inc()

    def worker_resources(self, cpu_seconds: float, rss_bytes: float) -> None:
        WORKER_CPU.set(cpu_seconds)
        WORKER_RSS.set(rss_bytes)

    def ab_reported(self, report: Mapping[str, Any]) -> None:
        for tag, arm in report["arms"].items():
            for bound, key in (("rate", "success_rate"), ("low", "ci_low"), ("high", "ci_high")):
                if arm.get(key) is not None:
                    AB_SUCCESS_RATE.labels(tag, bound).set(arm[key])
            versus = arm.get("versus_primary") or {}
            for test, key in (("z", "z_test_p"), ("welch", "welch_t_test_p")):
                if versus.get(key) is not None:
                    AB_P_VALUE.labels(tag, test).set(versus[key])
        srm = report["sample_ratio"]["chi_square_p"]
        if srm is not None:
            AB_SRM_P_VALUE.set(srm)


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
    edges = getattr(histogram, "_ml_api_edges", None)
    if edges is None:  # the bucket bounds as an array once, not converted on every call
        edges = np.asarray(bounds, dtype=np.float64)
        histogram._ml_api_edges = edges
    counts = np.bincount(edges.searchsorted(values, side="left"), minlength=len(bounds))
    for bucket, count in zip(buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    total.inc(float(values.sum()))


# Turns the values held under one key into writes. It runs when they are due (see
# Writes.hold), so it writes to the collectors directly.
Apply = Callable[[Any, list[Any]], None]


class Writes(Protocol):
    """How the per-request counters and histograms reach their collectors."""

    def add(self, counter: Any, amount: float = 1.0) -> None: ...
    def observe(self, histogram: Any, value: float) -> None: ...
    def observe_all(self, histogram: Any, values: np.ndarray[Any, Any]) -> None: ...

    def hold(self, apply: Apply, key: Any, value: Any, size: int) -> None:
        """``apply(key, values)`` on the values held under ``(apply, key)``, in the order
        they came; ``size`` is what one value weighs against the bound on what is held."""
        ...

    def flush(self) -> None: ...


class WriteThrough:
    """Every write at once (a process-local registry: a write is a locked float add)."""

    def add(self, counter: Any, amount: float = 1.0) -> None:
        counter.inc(amount)

    def observe(self, histogram: Any, value: float) -> None:
        histogram.observe(value)

    def observe_all(self, histogram: Any, values: np.ndarray[Any, Any]) -> None:
        observe_many(histogram, values)

    def hold(self, apply: Apply, key: Any, value: Any, size: int) -> None:
        apply(key, [value])

    def flush(self) -> None:
        return None


# What may be held before the write that reaches this many flushes: values per histogram, and
# probabilities of held answers. At 1,000 100-row requests a second, the confidence histogram
# would hold 100,000 floats by the flush.
HOLD_AT_MOST = 10_000
# Held answers at most, whatever their size: each costs the flush a little (a flush of 3,333
# single-row answers took 0.7 ms, most of it concatenating them; 1,000 keep it near 0.2 ms).
HOLD_ITEMS_AT_MOST = 1_000


class WriteBehind:
    """Writes held in the process and applied in one go by :meth:`flush`.

    In multiprocess mode each counter increment is a locked write into a memory-mapped file
    (about 1.3 µs; a histogram observation about 3.6 µs) and a 100-row request makes about
    twenty of them; under wrk, serving with no metrics at all ran 100-row OIP requests 16 %
    (1 client) to 32 % (8 clients) faster. Held back, a write is a dict update under one
    lock, and a flush applies each counter's sum once and each histogram's values as one
    increment per bucket. Safe from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._added: dict[Any, float] = {}
        self._observed: dict[Any, list[float]] = {}
        self._held: dict[tuple[Apply, Any], list[Any]] = {}
        self._held_size = 0
        self._held_items = 0
        _held_back.add(self)

    def add(self, counter: Any, amount: float = 1.0) -> None:
        with self._lock:
            self._added[counter] = self._added.get(counter, 0.0) + amount

    def observe(self, histogram: Any, value: float) -> None:
        self._hold(histogram, [value])

    def observe_all(self, histogram: Any, values: np.ndarray[Any, Any]) -> None:
        self._hold(histogram, values.tolist())

    def _hold(self, histogram: Any, values: list[float]) -> None:
        with self._lock:
            held = self._observed.setdefault(histogram, [])
            held.extend(values)
            full = len(held) >= HOLD_AT_MOST
        if full:  # big requests between two flushes: bounded memory, not a bounded delay
            self.flush()

    def hold(self, apply: Apply, key: Any, value: Any, size: int) -> None:
        with self._lock:
            held = self._held.get((apply, key))
            if held is None:
                held = self._held[apply, key] = []
            held.append(value)
            self._held_size += size
            self._held_items += 1
            full = self._held_size >= HOLD_AT_MOST or self._held_items >= HOLD_ITEMS_AT_MOST
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            held, self._held = self._held, {}
            self._held_size = self._held_items = 0
        for (apply, key), values in held.items():
            apply(key, values)
        with self._lock:
            added, self._added = self._added, {}
            observed, self._observed = self._observed, {}
        for counter, amount in added.items():
            counter.inc(amount)
        for histogram, values in observed.items():
            observe_many(histogram, np.asarray(values, dtype=np.float64))


# Every WriteBehind of this process, so rendering /metrics can flush them first.
_held_back: weakref.WeakSet[WriteBehind] = weakref.WeakSet()


def default_writes() -> Writes:
    """Held back in multiprocess mode (where a write is dear), at once otherwise."""
    return WriteBehind() if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else WriteThrough()


def flush_held_back() -> None:
    for writes in list(_held_back):
        writes.flush()


class NullMetrics(ServiceMetrics):
    """Observes nothing: what the service costs without metrics (benchmarks override the
    container's ``metrics`` provider with it)."""

    def __init__(self) -> None:
        self._serving = {}
        self._weights = set()
        self._children = {}
        self._writes = WriteThrough()

    def _observe_nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    model_loaded = deployment_installed = model_series_known = not_ready = _observe_nothing
    swap_finished = deployment_changed = guard_took_out = _observe_nothing
    request_started = request_finished = request_invalid = _observe_nothing
    model_served = model_failed = rows_predicted = _observe_nothing
    shadow_compared = shadow_dropped = shadow_failed = drift_measured = _observe_nothing
    feedback_item = feedback_joined = feedback_store_failed = _observe_nothing
    feedback_records_dropped = bandit_updated = ab_reported = _observe_nothing
    retrain_decided = worker_resources = _observe_nothing


class StreamMetrics:
    """What the stream consumer observes; one instance per process, from the container."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}
        self._lag_series: set[tuple[str, str]] = set()
        STREAM_IN_FLIGHT.set(0)
        STREAM_PAUSED.set(0)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def topics_known(self, input_topic: str, output_topic: str, error_topic: str) -> None:
        """Create the series at zero, so rates and alerts see the first message."""
        self._child(STREAM_CONSUMED, input_topic)
        self._child(STREAM_PRODUCED, output_topic, "answer")
        self._child(STREAM_PRODUCED, error_topic, "error")

    def consumed(self, topic: str, count: int) -> None:
        self._child(STREAM_CONSUMED, topic).inc(count)

    def answered(self, topic: str, seconds: float) -> None:
        self._child(STREAM_PRODUCED, topic, "answer").inc()
        STREAM_PROCESSING.observe(seconds)

    def refused(self, topic: str, reason: str, seconds: float) -> None:
        self._child(STREAM_PRODUCED, topic, "error").inc()
        self._child(STREAM_ERRORS, reason).inc()
        STREAM_PROCESSING.observe(seconds)

    def in_flight(self, count: int, paused: bool) -> None:
        STREAM_IN_FLIGHT.set(count)
        STREAM_PAUSED.set(1 if paused else 0)

    def lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of every assigned partition; partitions no longer assigned are dropped."""
        series = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
        for gone in self._lag_series - set(series):
            STREAM_LAG.remove(*gone)
        for labels, lag in series.items():
            STREAM_LAG.labels(*labels).set(lag)
        self._lag_series = set(series)


def exposition_registry() -> CollectorRegistry:
    """The registry to expose: this process's, or every worker's in multiprocess mode (for
    servers of their own, such as the stream consumer's)."""
    return _registry()


def render_latest() -> tuple[bytes, str]:
    """The exposition text: aggregated over workers in multiprocess mode."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


class _HeldBackFirst:
    """Collects nothing: writes what this process held back before the files are read, so
    that any exposition of the registry (the stream consumer's own /metrics server too) is
    current for this process."""

    def collect(self) -> list[Any]:
        flush_held_back()
        return []


def _registry() -> CollectorRegistry:
    """The registry to read, current with what this process held back: in multiprocess mode
    every collection writes it first (the registry may be kept, as the stream consumer's
    /metrics server does); the process-local registry is current once written now."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        registry.register(_HeldBackFirst())
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    from prometheus_client import REGISTRY

    flush_held_back()
    return REGISTRY


def current_samples(prefix: str = "ml_api_") -> list[tuple[str, dict[str, str], float]]:
    """Every sample whose name starts with ``prefix``, summed over this server's workers."""
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in _registry().collect():
        if not family.name.startswith(prefix):
            continue
        samples.extend((s.name, dict(s.labels), float(s.value)) for s in family.samples)
    return samples


def process_exited(pid: int) -> None:
    """Drop a finished worker's live gauges so they stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
