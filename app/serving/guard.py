"""The canary guard: a candidate that does worse than the primary is taken out of the traffic.

Each worker keeps, per arm, the model time and outcome of its recent requests. Every second
it compares each candidate with the primary over the spec's window: when the candidate has
served at least ``min_requests`` and its error rate exceeds the primary's by more than
``max_error_rate_increase``, or its p99 exceeds ``max_p99_ratio`` × the primary's p99 plus
``p99_slack_ms``, the worker takes it out (its share goes back to the primary) by writing the
spec with ``action: guard``, so every worker and replica follows. It stays out until a person
puts it back: the guard never adds a candidate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from app.errors import ServiceError
from app.metrics import ServiceMetrics
from app.registry.spec import GuardSettings
from app.serving.deployment import Deployment, ServingPlan

logger = logging.getLogger(__name__)

# Most observations kept per arm; older ones fall out of the window anyway.
MAX_OBSERVATIONS = 50_000
# Below this many primary requests its p99 is too noisy to judge a candidate's latency by.
MIN_PRIMARY_REQUESTS = 20


@dataclass(frozen=True)
class ArmFigures:
    requests: int
    errors: int
    p99_seconds: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Verdict:
    tag: str
    reason: str  # "error_rate" or "latency"
    detail: str


class CanaryGuard:
    def __init__(self, deployment: Deployment, metrics: ServiceMetrics) -> None:
        self._deployment = deployment
        self._metrics = metrics
        self._revision: int | None = None
        self._windows: dict[str, deque[tuple[float, float, bool]]] = {}

    def observe(self, revision: int, tag: str, seconds: float, ok: bool) -> None:
        """One request of an arm under spec ``revision`` (called on the request path only
        while candidates exist). A new revision starts with clean windows: old figures judged
        other weights."""
        if revision != self._revision:
            self._revision = revision
            self._windows = {}
        window = self._windows.get(tag)
        if window is None:
            window = self._windows[tag] = deque(maxlen=MAX_OBSERVATIONS)
        window.append((time.monotonic(), seconds, ok))

    def figures(self, tag: str, window_seconds: float) -> ArmFigures:
        since = time.monotonic() - window_seconds
        recent = [(s, ok) for t, s, ok in self._windows.get(tag, ()) if t >= since]
        if not recent:
            return ArmFigures(0, 0, None)
        seconds = np.fromiter((s for s, _ in recent), dtype=float, count=len(recent))
        errors = sum(1 for _, ok in recent if not ok)
        return ArmFigures(len(recent), errors, float(np.percentile(seconds, 99)))

    def judge(self, plan: ServingPlan) -> list[Verdict]:
        """Candidates of ``plan`` that the guard's settings say must go."""
        if plan.record.revision != self._revision:
            return []  # nothing observed under this spec yet
        settings = plan.spec.guard
        if not settings.enabled or not plan.spec.candidates:
            return []
        primary = self.figures(plan.spec.primary, settings.window_seconds)
        verdicts = []
        for candidate in plan.spec.candidates:
            verdict = _judge_one(
                candidate.tag,
                self.figures(candidate.tag, settings.window_seconds),
                primary,
                settings,
            )
            if verdict is not None:
                verdicts.append(verdict)
        return verdicts

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            plan = self._deployment.current()
            if plan is None:
                continue
            for verdict in self.judge(plan):
                await self._take_out(verdict)

    async def _take_out(self, verdict: Verdict) -> None:
        try:
            taken = await self._deployment.take_out(verdict.tag, reason=verdict.detail)
        except ServiceError as exc:
            logger.error("canary guard could not take %s out: %s", verdict.tag, exc.message)
            return
        if taken:
            self._metrics.guard_took_out(verdict.tag, verdict.reason)
            logger.warning("canary guard took %s out: %s", verdict.tag, verdict.detail)


def _judge_one(
    tag: str, candidate: ArmFigures, primary: ArmFigures, settings: GuardSettings
) -> Verdict | None:
    if candidate.requests < settings.min_requests:
        return None
    excess = candidate.error_rate - primary.error_rate
    if excess > settings.max_error_rate_increase:
        return Verdict(
            tag,
            "error_rate",
            f"error rate {candidate.error_rate:.1%} over {candidate.requests} requests against "
            f"the primary's {primary.error_rate:.1%} (allowed: +"
            f"{settings.max_error_rate_increase:.1%})",
        )
    if (
        candidate.p99_seconds is None
        or primary.p99_seconds is None
        or primary.requests < MIN_PRIMARY_REQUESTS
    ):
        return None
    bound = primary.p99_seconds * settings.max_p99_ratio + settings.p99_slack_ms / 1000
    if candidate.p99_seconds > bound:
        return Verdict(
            tag,
            "latency",
            f"p99 {candidate.p99_seconds * 1000:.1f} ms over {candidate.requests} requests "
            f"against the primary's {primary.p99_seconds * 1000:.1f} ms (allowed: "
            f"{bound * 1000:.1f} ms)",
        )
    return None
