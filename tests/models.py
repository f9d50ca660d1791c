"""Real trained scikit-learn models for tests, and helpers to publish them to a registry."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import palmerpenguins
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.publishing.publish import publish_experiment
from app.registry import MISSING_CATEGORY
from app.registry.meta import ExperimentMeta, FeatureSpec
from app.registry.store import ModelRegistry

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = ["island", "sex"]
TARGET = "species"


@cache
def penguins() -> pd.DataFrame:
    frame = palmerpenguins.load_penguins().drop(columns=["year"])
    for column in [*CATEGORICAL, TARGET]:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), np.nan)
    for column in CATEGORICAL:  # the serving convention for a missing category
        frame[column] = frame[column].fillna(MISSING_CATEGORY)
    return frame


def features() -> list[FeatureSpec]:
    frame = penguins()
    specs = [
        FeatureSpec(
            name=name,
            dtype="category",
            categories=sorted(str(v) for v in frame[name].unique() if v != MISSING_CATEGORY),
            nullable=True,
        )
        for name in CATEGORICAL
    ]
    specs += [FeatureSpec(name=name, dtype="float", nullable=True) for name in NUMERIC]
    return specs


def _pipeline(kind: str) -> Pipeline:
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(missing_values=MISSING_CATEGORY, strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    prep = ColumnTransformer([("num", numeric, NUMERIC), ("cat", categorical, CATEGORICAL)])
    estimator: Any
    if kind == "logreg":
        estimator = LogisticRegression(max_iter=500, C=0.05)
    elif kind == "hgb":
        estimator = HistGradientBoostingClassifier(max_iter=30, random_state=0)
    else:  # pragma: no cover - a test typo
        raise ValueError(kind)
    return Pipeline([("prep", prep), ("model", estimator)])


@cache
def trained(kind: str) -> Pipeline:
    frame = penguins()
    names = [f.name for f in features()]
    model = _pipeline(kind)
    model.fit(frame[names], frame[TARGET])
    return model


def _json_value(value: Any) -> Any:
    if value == MISSING_CATEGORY or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def sample_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Rows as /predict takes them (None for missing values)."""
    frame = penguins()
    names = [f.name for f in features()]
    rows: list[dict[str, Any]] = []
    for record in frame[names].iloc[offset : offset + n].to_dict(orient="records"):
        rows.append({str(k): _json_value(v) for k, v in record.items()})
    return rows


def model_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """What the service hands the model for ``rows``, built independently of its code."""
    names = [f.name for f in features()]
    frame = pd.DataFrame(rows)[names]
    for name in CATEGORICAL:
        frame[name] = frame[name].astype(object).where(frame[name].notna(), MISSING_CATEGORY)
    for name in NUMERIC:
        frame[name] = frame[name].astype(float)
    return frame


def publish(
    registry: ModelRegistry, tag: str, kind: str = "logreg", activate: bool = False
) -> ExperimentMeta:
    frame = penguins()
    names = [f.name for f in features()]
    meta = publish_experiment(
        registry,
        tag=tag,
        model=trained(kind),
        features=features(),
        training_frame=frame[names],
        reference_instances=sample_rows(5, offset=0) + sample_rows(3, offset=200),
        model_type=kind,
        params={"type": kind},
        metrics={"accuracy": 0.97 if kind == "logreg" else 0.98},
        git_commit="0" * 40,
    )
    if activate:
        registry.write_active(tag, updated_by="test", previous_tag=None)
    return meta


def publish_numeric(registry: ModelRegistry, tag: str) -> ExperimentMeta:
    """A model on the numeric features only (another input schema than the penguin models)."""
    frame = penguins().dropna(subset=NUMERIC)
    model = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=500))])
    model.fit(frame[NUMERIC].to_numpy(), frame[TARGET])
    rows = [{name: float(row[name]) for name in NUMERIC} for _, row in frame.head(3).iterrows()]
    return publish_experiment(
        registry,
        tag=tag,
        model=model,
        features=[FeatureSpec(name=name, dtype="float") for name in NUMERIC],
        training_frame=frame[NUMERIC],
        reference_instances=rows,
        model_type="logreg",
        params={},
        metrics={},
        git_commit=None,
    )


def publish_without_imputer(registry: ModelRegistry, tag: str) -> ExperimentMeta:
    """A model that passes every load check (its reference rows are complete) but fails on
    rows with a missing number when scikit-learn serves it: a canary broken on live data."""
    frame = penguins().dropna(subset=NUMERIC)
    names = [f.name for f in features()]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), NUMERIC),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    model = Pipeline([("prep", prep), ("model", LogisticRegression(max_iter=500))])
    model.fit(frame[names], frame[TARGET])
    complete = [row for row in sample_rows(40) if all(v is not None for v in row.values())]
    return publish_experiment(
        registry,
        tag=tag,
        model=model,
        features=features(),
        training_frame=frame[names],
        reference_instances=complete[:5],
        model_type="logreg",
        params={"imputer": False},
        metrics={},
        git_commit=None,
    )


def publish_island_biased(
    registry: ModelRegistry, tag: str, island: str = "Biscoe"
) -> ExperimentMeta:
    """A model trained on one island's penguins only: on its own held-out split it looks
    excellent (that accuracy goes to meta.json), on penguins from every island it is much
    worse - a training-serving skew, as when a model is trained on one market and serves all.
    """
    frame = penguins()
    names = [f.name for f in features()]
    local = frame[frame["island"] == island].sample(frac=1.0, random_state=3)
    cut = int(len(local) * 0.75)
    train, test = local.iloc[:cut], local.iloc[cut:]
    model = _pipeline("logreg")
    model.fit(train[names], train[TARGET])
    accuracy = float((model.predict(test[names]) == test[TARGET]).mean())
    return publish_experiment(
        registry,
        tag=tag,
        model=model,
        features=features(),
        training_frame=train[names],
        reference_instances=sample_rows(5, offset=0),
        model_type="logreg",
        params={"island": island},
        metrics={"accuracy": accuracy},
        git_commit=None,
    )


def labelled_rows(seed: int = 0) -> list[tuple[dict[str, Any], str]]:
    """Every penguin as a /predict row with its true species, in a seeded random order."""
    frame = penguins().sample(frac=1.0, random_state=seed)
    names = [f.name for f in features()]
    rows = []
    for record, label in zip(frame[names].to_dict(orient="records"), frame[TARGET], strict=True):
        if isinstance(label, str):
            rows.append(({str(k): _json_value(v) for k, v in record.items()}, label))
    return rows
