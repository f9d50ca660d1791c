"""The prediction use case: route, validate against the chosen model, predict, observe.

One request takes the deployment's plan once and is served wholly by one arm. A candidate
whose model call fails is counted against it (the canary guard reads that) and the request is
answered by the primary, so a broken canary costs its users nothing but a little time.
Requests answered by the primary are then offered to the shadows, off the answer's path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app.codecs.decoded import Decoded
from app.errors import ModelNotLoaded
from app.feedback.recorder import PredictionRecorder
from app.metrics import ServiceMetrics
from app.serving.batching import MicroBatcher
from app.serving.deployment import Deployment, ServingPlan
from app.serving.drift import DriftMonitor
from app.serving.guard import CanaryGuard
from app.serving.inputs import Batch
from app.serving.model import LoadedModel, PredictionResult
from app.serving.shadow import InFlight, ShadowMirror


@dataclass(frozen=True)
class Prediction:
    """A served request: which model answered (and in which role), and its answer."""

    request_id: str
    role: str
    result: PredictionResult
    batch: Batch
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def model_tag(self) -> str:
        return self.result.model_tag

    def body(self) -> dict[str, Any]:
        """Our JSON answer: one prediction per row, in input order."""
        body: dict[str, Any] = {
            "model_tag": self.result.model_tag,
            "request_id": self.request_id,
            "predictions": self.result.rows(),
        }
        if self.ignored_columns:
            body["ignored_columns"] = self.ignored_columns
        return body


class PredictionService:
    def __init__(
        self,
        deployment: Deployment,
        metrics: ServiceMetrics,
        drift: DriftMonitor,
        batcher: MicroBatcher,
        mirror: ShadowMirror,
        guard: CanaryGuard,
        in_flight: InFlight,
        recorder: PredictionRecorder,
    ) -> None:
        self._deployment = deployment
        self._batcher = batcher
        self._metrics = metrics
        self._drift = drift
        self._mirror = mirror
        self._guard = guard
        self._in_flight = in_flight
        self._recorder = recorder

    async def predict(
        self,
        decoded: Decoded,
        *,
        request_id: str | None,
        key: str | None = None,
        tag: str | None = None,
    ) -> Prediction:
        """Serve one decoded request; ``tag`` pins a loaded model instead of routing.
        ``request_id`` None: the prediction gets a new id of ours."""
        plan = self._deployment.plan()
        chosen = tag if tag is not None else plan.router.choose(key)
        model = plan.models.get(chosen)
        if model is None:
            raise ModelNotLoaded(
                f"experiment {chosen!r} is not loaded here: loaded are {', '.join(plan.models)}"
            )
        role = plan.role(chosen)
        batch = decoded.to_batch(model.schema)
        in_flight = self._in_flight
        in_flight.count += 1
        in_flight.started += 1
        try:
            model, role, result, seconds = await self._score(plan, model, role, batch)
        finally:
            in_flight.count -= 1
        self._observe(model.tag, role, result, batch, seconds)
        if tag is None and plan.spec.candidates:  # routed in a split: for the SRM check
            self._recorder.assigned(plan.record.revision, plan.router, chosen)
        request_id = self._recorder.served(
            request_id, model.tag, role, plan.record.revision, result
        )
        if role == "primary" and plan.spec.shadows:
            shadows = [plan.models[t] for t in plan.router.shadows()]
            if shadows:
                self._mirror.offer(shadows, batch, result, seconds)
        return Prediction(request_id, role, result, batch, decoded.ignored(model.schema))

    async def _score(
        self, plan: ServingPlan, model: LoadedModel, role: str, batch: Batch
    ) -> tuple[LoadedModel, str, PredictionResult, float]:
        judged = bool(plan.spec.candidates)
        started = time.perf_counter()
        try:
            probabilities = await self._batcher.predict_proba(model, batch)
        except Exception:
            self._metrics.model_failed(model.tag, role)
            if judged:
                self._guard.observe(
                    plan.record.revision, model.tag, time.perf_counter() - started, ok=False
                )
            if role != "candidate":
                raise
            model, role = plan.primary, "primary"  # the canary failed: the primary answers
            started = time.perf_counter()
            probabilities = await self._batcher.predict_proba(model, batch)
        seconds = time.perf_counter() - started
        if judged:
            self._guard.observe(plan.record.revision, model.tag, seconds, ok=True)
        return model, role, PredictionResult(model.tag, model.classes, probabilities), seconds

    def _observe(
        self, tag: str, role: str, result: PredictionResult, batch: Batch, seconds: float
    ) -> None:
        self._metrics.model_served(tag, role, seconds)
        self._metrics.rows_predicted(
            tag, role, result.classes, result.probabilities, batch.unknown_categories
        )
        self._drift.record(tag, batch)
