"""Converting a fitted pipeline to ONNX at publish time, and proving the copy faithful.

The ONNX copy is served only when, on the reference rows and the held-out rows, its labels
are identical to scikit-learn's and its probabilities agree within ``TOLERANCE``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.registry.meta import FeatureSpec, OnnxInfo
from app.registry.model_file import sha256_hex
from app.serving.inputs import Batch
from app.serving.runtime import OnnxRuntime, SklearnRuntime

TOLERANCE = 1e-4
STACKED_INPUT = "X"
ONNX_FILE = "model.onnx"


def convert(model: Any, features: Sequence[FeatureSpec]) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    inputs: list[tuple[str, Any]]
    if getattr(model, "feature_names_in_", None) is None:
        # Fitted on a plain array: one 2-D input, fed with one stacked array per call.
        inputs = [(STACKED_INPUT, FloatTensorType([None, len(features)]))]
    else:
        inputs = [
            (
                f.name,
                StringTensorType([None, 1])
                if f.dtype == "category"
                else FloatTensorType([None, 1]),
            )
            for f in features
        ]
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = to_onnx(model, initial_types=inputs, options={id(final): {"zipmap": False}})
    data: bytes = onx.SerializeToString()
    return data


def export_checked(
    model: Any, features: Sequence[FeatureSpec], check_batches: Sequence[Batch]
) -> tuple[bytes | None, OnnxInfo]:
    """Return the ONNX bytes and their record, or ``None`` and a note saying why not."""
    try:
        data = convert(model, features)
        onnx_runtime = OnnxRuntime(data, features)
    except Exception as exc:
        note = f"not convertible to ONNX, served by scikit-learn: {type(exc).__name__}: {exc}"
        return None, OnnxInfo(status="failed", tolerance=TOLERANCE, note=note[:500])
    sklearn_runtime = SklearnRuntime(model, features)
    rows, worst = 0, 0.0
    for batch in check_batches:
        expected = sklearn_runtime.predict_proba(batch)
        got = onnx_runtime.predict_proba(batch)
        rows += batch.n_rows
        worst = max(worst, float(np.abs(expected - got).max()))
        if not np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)) or worst > TOLERANCE:
            return None, OnnxInfo(
                status="failed",
                checked_rows=rows,
                max_abs_diff=worst,
                tolerance=TOLERANCE,
                note="ONNX predictions differ from scikit-learn beyond tolerance: not served",
            )
    info = OnnxInfo(
        status="ok",
        file=ONNX_FILE,
        sha256=sha256_hex(data),
        checked_rows=rows,
        max_abs_diff=worst,
        tolerance=TOLERANCE,
    )
    return data, info
