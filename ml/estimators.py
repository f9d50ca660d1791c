"""The model: one scikit-learn Pipeline holding every preprocessing step and the estimator.

Keeping imputation, scaling and one-hot encoding inside the pipeline means the registry
holds one object that takes raw feature columns, exactly what the service sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from app.registry import MISSING_CATEGORY
from ml.params import HgbParams, LogregParams, ModelParams
from ml.schema import DatasetSchema


def build_pipeline(schema: DatasetSchema, params: ModelParams) -> Pipeline:
    """An unfitted pipeline for ``schema``'s features, with the estimator ``params`` choose."""
    steps: list[tuple[str, Any, list[str]]] = []
    if schema.numeric_names:
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        steps.append(("numeric", numeric, schema.numeric_names))
    if schema.categorical_names:
        categorical = Pipeline(
            [
                # The service marks a missing category with MISSING_CATEGORY, not NaN.
                (
                    "impute",
                    SimpleImputer(missing_values=MISSING_CATEGORY, strategy="most_frequent"),
                ),
                # Dense output: HistGradientBoosting takes no sparse input. Categories unseen
                # in training encode as all zeros instead of failing a request.
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
            ]
        )
        steps.append(("categorical", categorical, schema.categorical_names))
    prepare = ColumnTransformer(steps, remainder="drop")
    return Pipeline([("prepare", prepare), ("model", _estimator(params))])


def _estimator(params: ModelParams) -> Any:
    if params.type == "logreg":
        return _logreg(params.logreg, params.seed)
    return _hgb(params.hgb, params.seed)


def _logreg(params: LogregParams, seed: int) -> LogisticRegression:
    return LogisticRegression(C=params.C, max_iter=params.max_iter, random_state=seed)


def _hgb(params: HgbParams, seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        learning_rate=params.learning_rate,
        max_iter=params.max_iter,
        max_leaf_nodes=params.max_leaf_nodes,
        max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf,
        l2_regularization=params.l2_regularization,
        # "auto" would switch early stopping on past 10,000 rows and hold out a random
        # validation split: results would then depend on data size in a hidden way.
        early_stopping=False,
        random_state=seed,
    )


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run native thread pools (OpenMP, BLAS) on one thread.

    On datasets this small the threads of HistGradientBoosting cost more than they give
    (a 5-fold CV took 18 s threaded, 3 s single-threaded on 2 cores), and a fixed thread
    count keeps floating-point sums, hence metrics, identical from machine to machine.
    """
    with threadpool_limits(limits=1):
        yield
