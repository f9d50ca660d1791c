"""The whole pipeline on a small CSV of our own: the schema is inferred, not assumed."""

from __future__ import annotations

import numpy as np
import pytest

from app.registry.store import ModelRegistry
from app.serving.model import load_verified
from tests.ml.conftest import CustomRun
from tests.ml.test_pipeline import LIMITS, service_accuracy


def test_custom_csv_schema_is_inferred_from_the_data(custom_run: CustomRun) -> None:
    features = {f["name"]: f for f in custom_run.schema["features"]}

    assert custom_run.schema["target"] == "grade"
    assert custom_run.schema["classes"] == ["1", "2", "3"]
    assert list(features) == ["size", "legs", "colour"]  # row_id dropped by params
    assert features["size"]["dtype"] == "float"
    assert features["legs"]["dtype"] == "int"
    assert features["colour"]["dtype"] == "category"
    assert features["colour"]["categories"] == ["blue", "green", "red"]


def test_custom_csv_experiment_loads_in_the_service(custom_run: CustomRun) -> None:
    registry = ModelRegistry(str(custom_run.project.registry))

    model = load_verified(registry, custom_run.tag, LIMITS)

    assert custom_run.tag == custom_run.commit[:7]
    assert model.classes == ["1", "2", "3"]
    assert all(isinstance(row["legs"], int) for row in model.meta.reference.instances)
    accuracy = service_accuracy(model, custom_run.project)
    assert accuracy == pytest.approx(custom_run.metrics["accuracy"])
    assert accuracy > 1 / 3  # better than chance: the features carry the label
    assert np.isfinite(custom_run.metrics["log_loss"])
