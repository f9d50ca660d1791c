"""A model loaded from the registry and verified, ready to predict."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from app.errors import ModelRejected
from app.registry.meta import ExperimentMeta
from app.registry.model_file import load_model
from app.registry.store import ModelRegistry
from app.serving.inputs import Batch, InputLimits, InputSchema


class Classifier(Protocol):
    classes_: Any

    def predict_proba(self, features: Any, /) -> Any: ...


@dataclass(frozen=True)
class PredictionResult:
    """The outcome of one model call: which model answered, and per-row probabilities."""

    model_tag: str
    classes: list[str]
    probabilities: np.ndarray[Any, Any]

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    @property
    def confidence(self) -> np.ndarray[Any, Any]:
        return np.asarray(self.probabilities.max(axis=1))

    def rows(self) -> list[dict[str, Any]]:
        """Response rows: the top label and every class probability, in input order."""
        classes = self.classes
        winners = self.probabilities.argmax(axis=1).tolist()
        return [
            {"label": classes[winner], "probabilities": dict(zip(classes, row, strict=True))}
            for winner, row in zip(winners, self.probabilities.tolist(), strict=True)
        ]


class LoadedModel:
    """One experiment's estimator with the schema that guards its input."""

    def __init__(
        self, meta: ExperimentMeta, estimator: Classifier, limits: InputLimits, load_seconds: float
    ) -> None:
        self.meta = meta
        self.tag = meta.tag
        self.estimator = estimator
        self.schema = InputSchema(meta.features, limits)
        self.classes = [str(c) for c in meta.classes]
        self.load_seconds = load_seconds

    def predict(self, batch: Batch) -> PredictionResult:
        probabilities = np.asarray(self.estimator.predict_proba(batch.to_frame()))
        return PredictionResult(self.tag, self.classes, probabilities)


def load_verified(registry: ModelRegistry, tag: str, limits: InputLimits) -> LoadedModel:
    """Load ``tag`` and prove it fit to serve, or raise without touching anything serving.

    Checks, in order: metadata validates, file hash matches, only trusted types, the
    estimator's classes and input columns match the metadata, and the reference rows give
    the labels recorded at publish time.
    """
    started = time.perf_counter()
    meta = registry.read_meta(tag)
    estimator = load_model(registry.read_model_bytes(meta), expected_sha256=meta.model_sha256)
    _check_schema(meta, estimator)
    model = LoadedModel(meta, estimator, limits, load_seconds=0.0)
    _check_reference(model)
    model.load_seconds = time.perf_counter() - started
    return model


def _check_schema(meta: ExperimentMeta, estimator: Any) -> None:
    if not hasattr(estimator, "predict_proba"):
        raise ModelRejected(f"experiment {meta.tag!r}: the model has no predict_proba")
    classes = [str(c) for c in getattr(estimator, "classes_", [])]
    if classes != meta.classes:
        raise ModelRejected(
            f"experiment {meta.tag!r}: model classes {classes} differ from meta.json {meta.classes}"
        )
    names = getattr(estimator, "feature_names_in_", None)
    expected = [feature.name for feature in meta.features]
    if names is not None and sorted(map(str, names)) != sorted(expected):
        raise ModelRejected(
            f"experiment {meta.tag!r}: model expects columns {list(map(str, names))}, "
            f"meta.json declares {expected}"
        )


def _check_reference(model: LoadedModel) -> None:
    reference = model.meta.reference
    try:
        # The reference sample is checked whatever the request limits are.
        unlimited = replace(model.schema.limits, max_rows=max(len(reference.instances), 1))
        batch = InputSchema(model.meta.features, unlimited).rows_to_batch(reference.instances)
        labels = model.predict(batch).labels
    except Exception as exc:
        raise ModelRejected(
            f"experiment {model.tag!r}: the reference sample could not be scored: {exc}"
        ) from exc
    if labels != reference.labels:
        raise ModelRejected(
            f"experiment {model.tag!r}: reference sample gave {labels}, "
            f"meta.json records {reference.labels}"
        )
