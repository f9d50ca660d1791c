"""The benchmark's models, on 30 numeric features (3 classes), seeded:

- ``light``: StandardScaler + LogisticRegression;
- ``heavy``: HistGradientBoostingClassifier with 200 boosting iterations (600 trees).

Each is fitted once and published to a registry for ml-api (which verifies and serves its ONNX
copy); the same fitted object is saved with joblib for the peer servers (MLServer's
scikit-learn runtime loads joblib files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import threadpoolctl
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.publishing.publish import publish_experiment
from app.registry.meta import FeatureSpec
from app.registry.store import ModelRegistry

N_FEATURES = 30
TAG = "bench-logreg"
TAGS = {"light": TAG, "heavy": "bench-hgb"}
MODEL_TYPES = {"light": "logreg", "heavy": "hgb"}


def fitted(kind: str = "light") -> tuple[Any, np.ndarray[Any, Any]]:
    x, y = make_classification(
        n_samples=2000, n_features=N_FEATURES, n_informative=12, n_classes=3, random_state=0
    )
    labels = np.array(["a", "b", "c"])[y]
    model: Any
    if kind == "light":
        model = Pipeline(
            [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))]
        )
    elif kind == "heavy":
        with threadpoolctl.threadpool_limits(limits=1):
            model = HistGradientBoostingClassifier(
                max_iter=200, early_stopping=False, random_state=0
            )
            model.fit(x, labels)
        return model, x
    else:
        raise ValueError(f"unknown model kind {kind!r}: light or heavy")
    model.fit(x, labels)
    return model, x


def features() -> list[FeatureSpec]:
    return [FeatureSpec(name=f"f{i}", dtype="float") for i in range(N_FEATURES)]


def row(x: np.ndarray[Any, Any], i: int = 0) -> dict[str, float]:
    return {f"f{j}": float(x[i, j]) for j in range(N_FEATURES)}


def build(
    registry_dir: Path, joblib_path: Path | None = None, kind: str = "light"
) -> np.ndarray[Any, Any]:
    """Publish the model as the active experiment; optionally save it for the peers."""
    import pandas as pd

    model, x = fitted(kind)
    frame = pd.DataFrame(x, columns=[f.name for f in features()])
    registry = ModelRegistry(str(registry_dir))
    publish_experiment(
        registry,
        tag=TAGS[kind],
        model=model,
        features=features(),
        training_frame=frame,
        reference_instances=[row(x, i) for i in range(5)],
        model_type=MODEL_TYPES[kind],
        params={"C": 1.0},
        metrics={},
        git_commit=None,
        check_frame=frame.iloc[:500],
        exist_ok=True,
        activate_if_none=True,
    )
    if joblib_path is not None:
        import joblib

        joblib.dump(model, joblib_path)
    return x


def oip_body(x: np.ndarray[Any, Any], rows: int) -> bytes:
    """One OIP InferenceRequest of ``rows`` rows: a 2-D FP64 tensor [rows, features] asking for
    ``predict_proba``, which both ml-api and MLServer's scikit-learn runtime take as it is."""
    import orjson

    tensor = {
        "name": "input-0",
        "shape": [rows, N_FEATURES],
        "datatype": "FP64",
        "data": [float(v) for row in x[:rows] for v in row],
    }
    return orjson.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}]})
