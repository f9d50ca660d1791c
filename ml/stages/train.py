"""Stage ``train``: cross-validate, then fit the pipeline on the whole training split.

Writes the fitted pipeline with skops (``models/model.skops``, the serving allow-list is
checked before it is written) and the cross-validated scores (``metrics/cv.json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from app.registry import dump_model
from ml.errors import ParamsError, run_stage
from ml.estimators import build_pipeline, single_threaded
from ml.layout import CV_METRICS, MODEL_FILE, SCHEMA_FILE, TRAIN_DATA, write_json
from ml.params import ModelParams, load_params
from ml.schema import DatasetSchema, read_schema, read_split

CV_SCORING = ("accuracy", "balanced_accuracy", "f1_macro")


@dataclass(frozen=True)
class Trained:
    model: Pipeline
    cv_scores: dict[str, Any]


def train(
    features: pd.DataFrame, labels: pd.Series[str], schema: DatasetSchema, params: ModelParams
) -> Trained:
    """Cross-validated scores of the configured pipeline, and the pipeline fitted on all rows."""
    _check_folds(labels, params.cv_folds)
    folds = StratifiedKFold(n_splits=params.cv_folds, shuffle=True, random_state=params.seed)
    with single_threaded():
        results = cross_validate(
            build_pipeline(schema, params),
            features,
            labels,
            cv=folds,
            scoring=list(CV_SCORING),
            n_jobs=1,  # parallel folds give the same scores but fight the stage for 2 cores
            error_score="raise",
        )
        model = build_pipeline(schema, params).fit(features, labels)
    return Trained(model=model, cv_scores=_summarise(results, params.cv_folds))


def _check_folds(labels: pd.Series[str], folds: int) -> None:
    counts = labels.value_counts()
    if int(counts.min()) < folds:
        raise ParamsError(
            f"params model.cv_folds={folds} is more than the {int(counts.min())} training rows "
            f"of class {str(counts.idxmin())!r}: lower it or add data"
        )


def _summarise(results: dict[str, Any], folds: int) -> dict[str, Any]:
    summary: dict[str, Any] = {"folds": folds}
    for name in CV_SCORING:
        scores = np.asarray(results[f"test_{name}"], dtype=float)
        summary[name] = {
            "mean": float(scores.mean()),
            "std": float(scores.std()),
            "per_fold": [float(s) for s in scores],
        }
    return summary


def _run() -> None:
    params = load_params()
    schema = read_schema(SCHEMA_FILE)
    features, labels = read_split(TRAIN_DATA, schema)
    trained = train(features, labels, schema, params.model)
    data = dump_model(trained.model)
    MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
    MODEL_FILE.write_bytes(data)
    write_json(CV_METRICS, trained.cv_scores)
    accuracy = trained.cv_scores["accuracy"]
    print(
        f"train: {params.model.type} on {len(labels)} rows, {params.model.cv_folds}-fold CV "
        f"accuracy {accuracy['mean']:.4f} ± {accuracy['std']:.4f}"
    )


def main() -> None:
    run_stage("train", _run)


if __name__ == "__main__":
    main()
