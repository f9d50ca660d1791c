"""Stage ``evaluate``: held-out metrics, a robustness check, and the data for DVC plots.

The robustness check scores the same test rows after seeded damage: Gaussian noise on the
numeric features and a share of every feature blanked to missing, the two ways real inputs
most often differ from a clean training set.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from app.registry import MISSING_CATEGORY
from ml.errors import run_stage
from ml.estimators import single_threaded
from ml.layout import (
    CONFUSION_PLOT,
    MODEL_FILE,
    PR_DIR,
    ROC_DIR,
    SCHEMA_FILE,
    TEST_DATA,
    TEST_METRICS,
    read_model,
    write_json,
)
from ml.params import RobustnessParams, load_params
from ml.schema import DatasetSchema, read_schema, read_split

Curve = list[dict[str, float]]
# Curve points are rounded: plots gain nothing from 17 digits, diffs of plot files do.
CURVE_DIGITS = 6


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    confusion: list[tuple[str, str]]
    roc: dict[str, Curve]
    pr: dict[str, Curve]


def evaluate(
    model: Any,
    features: pd.DataFrame,
    labels: pd.Series[str],
    schema: DatasetSchema,
    robustness: RobustnessParams,
) -> Evaluation:
    """Scores on the test split, on a damaged copy of it, and per-class ROC/PR curves."""
    classes = [str(c) for c in model.classes_]
    damaged = perturb(features, schema, robustness)
    with single_threaded():
        probabilities = np.asarray(model.predict_proba(features))
        damaged_probabilities = np.asarray(model.predict_proba(damaged))
    metrics = score(labels, probabilities, classes)
    metrics["robustness"] = score(labels, damaged_probabilities, classes)
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    return Evaluation(
        metrics=metrics,
        confusion=list(zip(labels.tolist(), predicted, strict=True)),
        roc={c: _roc(labels, probabilities[:, i], c) for i, c in enumerate(classes)},
        pr={c: _pr(labels, probabilities[:, i], c) for i, c in enumerate(classes)},
    )


def score(
    labels: pd.Series[str], probabilities: np.ndarray[Any, Any], classes: list[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, one-vs-rest ROC AUC and log loss."""
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    truth = labels.to_numpy(dtype=object)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        # Over the classes seen in truth or prediction; an undefined per-class score is 0.
        "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0.0)),
        "roc_auc_ovr": _roc_auc(truth, probabilities, classes),
        "log_loss": float(log_loss(truth, probabilities, labels=classes)),
    }


def _roc_auc(
    truth: np.ndarray[Any, Any], probabilities: np.ndarray[Any, Any], classes: list[str]
) -> float | None:
    if set(truth.tolist()) != set(classes):
        return None  # a class absent from the test split has no ROC curve
    if len(classes) == 2:
        return float(roc_auc_score(truth == classes[1], probabilities[:, 1]))
    return float(roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes))


def perturb(
    features: pd.DataFrame, schema: DatasetSchema, params: RobustnessParams
) -> pd.DataFrame:
    """A seeded, damaged copy: noisy numeric features, a share of all values blanked."""
    rng = np.random.default_rng(params.seed)
    damaged = features.copy()
    for feature in schema.features:
        column = damaged[feature.name]
        if feature.dtype != "category":
            values = column.to_numpy(dtype=np.float64)
            spread = float(np.nanstd(values)) if np.isfinite(values).any() else 0.0
            noisy = values + rng.normal(0.0, params.noise_scale * spread, size=len(values))
            damaged[feature.name] = np.round(noisy) if feature.dtype == "int" else noisy
        blank = rng.random(len(column)) < params.missing_share
        missing = MISSING_CATEGORY if feature.dtype == "category" else np.nan
        damaged.loc[blank, feature.name] = missing
    return damaged


def _roc(labels: pd.Series[str], scores: np.ndarray[Any, Any], positive: str) -> Curve:
    truth = (labels == positive).to_numpy()
    if truth.all() or not truth.any():
        return []
    fpr, tpr, _ = roc_curve(truth, scores)
    return _points({"fpr": fpr, "tpr": tpr})


def _pr(labels: pd.Series[str], scores: np.ndarray[Any, Any], positive: str) -> Curve:
    truth = (labels == positive).to_numpy()
    if not truth.any():
        return []
    precision, recall, _ = precision_recall_curve(truth, scores)
    return _points({"recall": recall, "precision": precision})


def _points(columns: dict[str, np.ndarray[Any, Any]]) -> Curve:
    names = list(columns)
    rows = zip(*(columns[name].tolist() for name in names), strict=True)
    return [
        {name: round(float(value), CURVE_DIGITS) for name, value in zip(names, row, strict=True)}
        for row in rows
    ]


def plot_file_names(classes: list[str]) -> dict[str, str]:
    """A distinct, file-system safe JSON file name per class (class names are free text)."""
    names: dict[str, str] = {}
    for label in classes:
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_") or "class"
        candidate, n = stem, 1
        while f"{candidate}.json" in names.values():
            n += 1
            candidate = f"{stem}_{n}"
        names[label] = f"{candidate}.json"
    return names


def write_outputs(evaluation: Evaluation) -> None:
    write_json(TEST_METRICS, evaluation.metrics)
    CONFUSION_PLOT.parent.mkdir(parents=True, exist_ok=True)
    with CONFUSION_PLOT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows(evaluation.confusion)
    _write_curves(ROC_DIR, evaluation.roc)
    _write_curves(PR_DIR, evaluation.pr)


def _write_curves(folder: Path, curves: dict[str, Curve]) -> None:
    names = plot_file_names(list(curves))
    for label, points in curves.items():
        if points:
            write_json(folder / names[label], points)


def _run() -> None:
    params = load_params()
    schema = read_schema(SCHEMA_FILE)
    features, labels = read_split(TEST_DATA, schema)
    model = read_model(MODEL_FILE)
    evaluation = evaluate(model, features, labels, schema, params.evaluate.robustness)
    write_outputs(evaluation)
    metrics, damaged = evaluation.metrics, evaluation.metrics["robustness"]
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f}, "
        f"log loss {metrics['log_loss']:.4f}; damaged inputs accuracy {damaged['accuracy']:.4f}"
    )


def main() -> None:
    run_stage("evaluate", _run)


if __name__ == "__main__":
    main()
