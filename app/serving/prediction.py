"""The /predict use case: validate against the active model, predict, observe."""

from __future__ import annotations

from typing import Any

from app.metrics import ServiceMetrics
from app.serving.batching import MicroBatcher
from app.serving.drift import DriftMonitor
from app.serving.holder import ModelHolder
from app.serving.inputs import Batch
from app.serving.model import LoadedModel, PredictionResult


class PredictionService:
    def __init__(
        self,
        holder: ModelHolder,
        metrics: ServiceMetrics,
        drift: DriftMonitor,
        batcher: MicroBatcher,
    ) -> None:
        self._holder = holder
        self._batcher = batcher
        self._metrics = metrics
        self._drift = drift

    async def predict_json(self, body: bytes) -> dict[str, Any]:
        model = self._holder.active()
        batch = model.schema.parse_json(body)
        return await self._predict(model, batch)

    async def predict_csv(self, data: bytes) -> dict[str, Any]:
        model = self._holder.active()
        batch = model.schema.parse_csv(data)
        return await self._predict(model, batch)

    async def _predict(self, model: LoadedModel, batch: Batch) -> dict[str, Any]:
        probabilities = await self._batcher.predict_proba(model, batch)
        result = PredictionResult(model.tag, model.classes, probabilities)
        labels = result.labels
        self._metrics.rows_predicted(model.tag, labels, result.confidence, batch.unknown_categories)
        self._drift.record(model.tag, batch)
        return {"model_tag": model.tag, "predictions": result.rows()}
