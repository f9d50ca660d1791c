from __future__ import annotations

import numpy as np
import pytest

from app.errors import ModelRejected
from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import load_verified
from app.serving.runtime import OnnxRuntime, SklearnRuntime
from tests.models import model_frame, sample_rows, trained

LIMITS = InputLimits(max_rows=1000, max_string_length=256)


def test_publish_records_the_onnx_check(registry: ModelRegistry) -> None:
    logreg = registry.read_meta("base").onnx
    assert logreg is not None
    assert logreg.status == "ok"
    assert logreg.max_abs_diff is not None
    assert logreg.max_abs_diff <= 1e-4
    assert logreg.checked_rows >= 8
    hgb = registry.read_meta("boost").onnx
    assert hgb is not None
    assert hgb.status == "failed"
    assert hgb.note


def test_auto_serves_onnx_when_it_passed_and_sklearn_otherwise(registry: ModelRegistry) -> None:
    assert isinstance(load_verified(registry, "base", LIMITS).runtime, OnnxRuntime)
    assert isinstance(load_verified(registry, "boost", LIMITS).runtime, SklearnRuntime)
    forced = load_verified(registry, "base", LIMITS, runtime="sklearn")
    assert isinstance(forced.runtime, SklearnRuntime)


def test_onnx_runtime_refuses_a_model_without_onnx(registry: ModelRegistry) -> None:
    with pytest.raises(ModelRejected, match="no usable ONNX"):
        load_verified(registry, "boost", LIMITS, runtime="onnx")


def test_onnx_and_sklearn_agree_on_every_row(registry: ModelRegistry) -> None:
    rows = sample_rows(344)  # includes rows with missing values
    model = load_verified(registry, "base", LIMITS, runtime="onnx")
    batch = model.schema.rows_to_batch(rows)
    expected = trained("logreg").predict_proba(model_frame(rows))
    got = model.predict_proba(batch)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_tampered_onnx_file_is_refused(registry: ModelRegistry, registry_dir: object) -> None:
    from pathlib import Path

    onnx_file = Path(str(registry_dir)) / "experiments" / "base" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"x")
    with pytest.raises(ModelRejected, match="ONNX file sha256"):
        load_verified(registry, "base", LIMITS)
