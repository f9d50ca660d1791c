"""The ONNX copy of a HistGradientBoosting pipeline: it converts, and it scores like sklearn.

These fail when an upgrade of skl2onnx, onnx, protobuf or onnxruntime breaks the conversion
of tree ensembles again (skl2onnx 1.20 with protobuf 7 raised "Expected an int, got a
boolean" while building the TreeEnsembleClassifier node).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import threadpoolctl
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from app.publishing.onnx_export import (
    TOLERANCE,
    TREE_TOLERANCE,
    convert,
    export_checked,
    tolerance_for,
)
from app.registry.meta import MISSING_CATEGORY, FeatureSpec
from app.registry.store import ModelRegistry
from app.serving.inputs import Batch, batch_from_frame
from app.serving.runtime import OnnxRuntime, SklearnRuntime
from tests.models import features, penguins, trained

N_NUMERIC = 30


def _agreement(model: Any, specs: list[FeatureSpec], frame: pd.DataFrame) -> float:
    """Convert ``model``, score ``frame`` both ways, assert equal labels; the largest
    probability difference."""
    onnx_runtime = OnnxRuntime(convert(model, specs), specs)
    batch: Batch = batch_from_frame(frame, specs)
    expected = SklearnRuntime(model, specs).predict_proba(batch)
    got = onnx_runtime.predict_proba(batch)
    assert got.shape == expected.shape
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    return float(np.abs(got - expected).max())


def _blank(frame: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """``frame`` with ``share`` of every column missing (NaN, or the missing category)."""
    rng = np.random.default_rng(seed)
    blanked = frame.copy()
    for column in blanked.columns:
        hit = rng.random(len(blanked)) < share
        missing: Any = MISSING_CATEGORY if blanked[column].dtype == object else np.nan
        blanked.loc[hit, column] = missing
    return blanked


def test_the_penguin_hgb_pipeline_converts_to_a_tree_ensemble() -> None:
    graph = onnx.load_from_string(convert(trained("hgb"), features())).graph
    assert "TreeEnsembleClassifier" in {node.op_type for node in graph.node}


def test_the_penguin_hgb_pipeline_scores_like_sklearn_on_every_row() -> None:
    specs = features()
    frame = penguins()[[f.name for f in specs]]  # has missing numbers and categories
    model = trained("hgb")
    assert _agreement(model, specs, frame) <= TOLERANCE
    # Imputation inside the graph: many missing values, numeric and categorical.
    assert _agreement(model, specs, _blank(frame, 0.3, seed=1)) <= TOLERANCE


@cache
def _numeric_data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """bench/bench_model.py's data, with 10% of the values missing."""
    x, y = make_classification(
        n_samples=2000, n_features=N_NUMERIC, n_informative=12, n_classes=3, random_state=0
    )
    x[np.random.default_rng(5).random(x.shape) < 0.1] = np.nan
    return x, np.array(["a", "b", "c"])[y]


def test_numeric_hgb_routes_missing_values_like_sklearn() -> None:
    """All-numeric, fitted on an array with NaN: each split learned where missing values go,
    and the graph must send them the same way (nodes_missing_value_tracks_true)."""
    x, labels = _numeric_data()
    model = HistGradientBoostingClassifier(max_iter=200, random_state=0)
    with threadpoolctl.threadpool_limits(limits=1):  # OpenMP on a busy 2-core box: 10x slower
        model.fit(x[:1500], labels[:1500])
    splits = np.concatenate(
        [
            tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
            for trees in model._predictors
            for tree in trees
        ]
    )
    assert 0 < splits["missing_go_to_left"].sum() < len(splits)  # both directions occur
    specs = [FeatureSpec(name=f"f{i}", dtype="float", nullable=True) for i in range(N_NUMERIC)]
    held_out = pd.DataFrame(x[1500:], columns=[f.name for f in specs])
    assert held_out.isna().any(axis=1).mean() > 0.9  # nearly every row has a missing value
    assert _agreement(model, specs, held_out) <= TOLERANCE


def test_tree_models_get_the_tree_tolerance_and_the_rest_stays_strict() -> None:
    assert tolerance_for(trained("hgb")) == TREE_TOLERANCE
    assert tolerance_for(trained("logreg")) == TOLERANCE == 1e-4


def test_publish_serves_hgb_through_onnx_and_records_the_check(registry: ModelRegistry) -> None:
    hgb = registry.read_meta("boost").onnx
    assert hgb is not None
    assert hgb.status == "ok", hgb.note
    assert hgb.tolerance == TREE_TOLERANCE
    assert hgb.checked_rows >= 8
    assert hgb.max_abs_diff is not None
    assert hgb.max_abs_diff <= TREE_TOLERANCE
    logreg = registry.read_meta("base").onnx
    assert logreg is not None
    assert logreg.tolerance == TOLERANCE


def test_native_categorical_splits_are_not_converted() -> None:
    """skl2onnx writes every split as a threshold test, which would score a categorical
    split wrongly: refused with the reason recorded, so scikit-learn serves the model."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 4, 400), rng.normal(size=400)]).astype(float)
    y = np.where(np.isin(x[:, 0], [1, 3]), "odd", "even")
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(x, y)
    specs = [FeatureSpec(name="c", dtype="float"), FeatureSpec(name="v", dtype="float")]
    batch = batch_from_frame(pd.DataFrame(x[:20], columns=["c", "v"]), specs)
    data, info = export_checked(model, specs, [batch])
    assert data is None
    assert info.status == "failed"
    assert info.note is not None
    assert "categorical" in info.note


@pytest.mark.parametrize("kind", ["logreg", "hgb"])
def test_export_checked_passes_both_penguin_models(kind: str) -> None:
    specs = features()
    batch = batch_from_frame(penguins()[[f.name for f in specs]], specs)
    data, info = export_checked(trained(kind), specs, [batch])
    assert data is not None, info.note
    assert info.status == "ok"
    assert info.checked_rows == len(penguins())
