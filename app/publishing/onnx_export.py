"""Converting a fitted pipeline to ONNX at publish time, and proving the copy faithful.

The ONNX copy is served only when, on the reference rows and the held-out rows, its labels
are identical to scikit-learn's and its probabilities agree within ``TOLERANCE``
(``TREE_TOLERANCE`` for a HistGradientBoosting model).
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
# ONNX Runtime compares float32 features with float32 split thresholds, scikit-learn float64
# with float64. A value that sits exactly on a threshold (a held-out value halfway between two
# training values: HistGradientBoosting splits at such midpoints) can take the other branch in
# one of them: on the penguin data that moved one row's probabilities by 7.2e-4, labels equal.
# Rows off a threshold agree within a few 1e-6. Labels must still be identical on every row.
TREE_TOLERANCE = 1e-3
STACKED_INPUT = "X"
ONNX_FILE = "model.onnx"


class _IntListAttributes:
    """A conversion container whose ``add_node`` hands integer-list attributes over as ints.

    skl2onnx (1.20) fills ``nodes_missing_value_tracks_true`` of a HistGradientBoosting tree
    ensemble with Python ``False`` for every leaf; protobuf 7 refuses a bool in
    ``AttributeProto.ints`` ("Expected an int, got a boolean"; protobuf 6 took it). The values
    themselves are right: for a split, 1 sends a missing value to the true (left) child, as
    scikit-learn's ``missing_go_to_left`` does.
    """

    INT_LISTS = ("nodes_missing_value_tracks_true",)

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, *args: Any, **attrs: Any) -> Any:
        for key in self.INT_LISTS:
            if key in attrs:
                attrs[key] = [int(value) for value in attrs[key]]
        return self._container.add_node(op_type, inputs, outputs, *args, **attrs)


def _hgb_classifier_converter() -> Any:
    """skl2onnx's own HistGradientBoostingClassifier converter, given ``_IntListAttributes``."""
    from skl2onnx.common._registration import get_converter

    registered = get_converter("SklearnHistGradientBoostingClassifier")

    def convert_hgb(scope: Any, operator: Any, container: Any) -> None:
        model = operator.raw_operator
        # skl2onnx writes every split as "x <= threshold": a native categorical split (a
        # bitset test) would silently score wrong, so refuse it here.
        if any(tree.nodes["is_categorical"].any() for trees in model._predictors for tree in trees):
            raise NotImplementedError("native categorical splits cannot be converted to ONNX")
        registered(scope, operator, _IntListAttributes(container))

    return convert_hgb


def convert(model: Any, features: Sequence[FeatureSpec]) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.ensemble import HistGradientBoostingClassifier

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
        onx = convert_sklearn(
            model,
            name=f"ONNX({type(model).__name__})",  # what skl2onnx.to_onnx names it
            initial_types=inputs,
            options={id(final): {"zipmap": False}},
            # Only for this call: no converter is replaced in skl2onnx's global registry.
            custom_conversion_functions={
                HistGradientBoostingClassifier: _hgb_classifier_converter()
            },
        )
    data: bytes = onx.SerializeToString()
    return data


def tolerance_for(model: Any) -> float:
    """How far the ONNX copy of ``model`` may be from scikit-learn's probabilities."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return TREE_TOLERANCE if isinstance(final, HistGradientBoostingClassifier) else TOLERANCE


def export_checked(
    model: Any, features: Sequence[FeatureSpec], check_batches: Sequence[Batch]
) -> tuple[bytes | None, OnnxInfo]:
    """Return the ONNX bytes and their record, or ``None`` and a note saying why not."""
    tolerance = tolerance_for(model)
    try:
        data = convert(model, features)
        onnx_runtime = OnnxRuntime(data, features)
    except Exception as exc:
        note = f"not convertible to ONNX, served by scikit-learn: {type(exc).__name__}: {exc}"
        return None, OnnxInfo(status="failed", tolerance=tolerance, note=note[:500])
    sklearn_runtime = SklearnRuntime(model, features)
    rows, worst = 0, 0.0
    for batch in check_batches:
        expected = sklearn_runtime.predict_proba(batch)
        got = onnx_runtime.predict_proba(batch)
        rows += batch.n_rows
        worst = max(worst, float(np.abs(expected - got).max()))
        if not np.array_equal(expected.argmax(axis=1), got.argmax(axis=1)) or worst > tolerance:
            return None, OnnxInfo(
                status="failed",
                checked_rows=rows,
                max_abs_diff=worst,
                tolerance=tolerance,
                note="ONNX predictions differ from scikit-learn beyond tolerance: not served",
            )
    info = OnnxInfo(
        status="ok",
        file=ONNX_FILE,
        sha256=sha256_hex(data),
        checked_rows=rows,
        max_abs_diff=worst,
        tolerance=tolerance,
    )
    return data, info
