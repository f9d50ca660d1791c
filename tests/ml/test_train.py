"""Stage train: one pipeline with all preprocessing, either estimator, serving dtypes in, and
the same bytes every time."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from app.registry import MISSING_CATEGORY
from app.registry.model_file import dump_model, load_model, sha256_hex
from ml.errors import ParamsError
from ml.layout import CV_METRICS, MODEL_FILE, SCHEMA_FILE, TRAIN_DATA
from ml.params import ModelParams, Params
from ml.schema import model_frame, write_schema
from ml.stages.preprocess import Prepared
from ml.stages.train import Trained, train
from tests.ml.project import PROJECT_ROOT, pipeline_env


def split(prepared: Prepared) -> tuple[pd.DataFrame, pd.Series[str]]:
    schema = prepared.schema
    return model_frame(prepared.train, schema.features), prepared.train[schema.target]


def test_logreg_pipeline_takes_serving_rows_with_missing_and_unknown_values(
    trained_logreg: Trained, prepared_penguins: Prepared
) -> None:
    row = {
        "island": ["Atlantis", MISSING_CATEGORY],
        "bill_length_mm": [45.0, math.nan],
        "bill_depth_mm": [15.0, math.nan],
        "flipper_length_mm": [220.0, math.nan],
        "body_mass_g": [5000.0, math.nan],
        "sex": [MISSING_CATEGORY, "female"],
    }
    frame = pd.DataFrame(
        {
            k: np.asarray(v, dtype=object if k in {"island", "sex"} else float)
            for k, v in row.items()
        }
    )

    probabilities = trained_logreg.model.predict_proba(frame)

    assert probabilities.shape == (2, 3)
    assert list(trained_logreg.model.feature_names_in_) == prepared_penguins.schema.feature_names


def test_cv_scores_are_recorded_per_fold(trained_logreg: Trained, params: Params) -> None:
    accuracy = trained_logreg.cv_scores["accuracy"]

    assert trained_logreg.cv_scores["folds"] == params.model.cv_folds
    assert len(accuracy["per_fold"]) == params.model.cv_folds
    assert accuracy["mean"] == pytest.approx(np.mean(accuracy["per_fold"]))
    assert accuracy["mean"] > 0.9


@pytest.mark.parametrize("model_type", ["logreg", "hgb"])
def test_trained_models_pass_the_serving_allow_list_and_are_deterministic(
    prepared_penguins: Prepared, params: Params, model_type: str
) -> None:
    features, labels = split(prepared_penguins)
    model_params = params.model.model_copy(update={"type": model_type, "cv_folds": 2})

    first = train(features, labels, prepared_penguins.schema, model_params)
    second = train(features, labels, prepared_penguins.schema, model_params)

    data = dump_model(first.model)
    reloaded = load_model(data, expected_sha256=sha256_hex(data))
    np.testing.assert_array_equal(
        reloaded.predict_proba(features), second.model.predict_proba(features)
    )
    assert first.cv_scores == second.cv_scores
    assert dump_model(second.model) == data


def stage_workspace(root: Path, prepared: Prepared, model_type: str) -> Path:
    """What the train stage reads: params.yaml, the prepared train split and schema."""
    root.mkdir()
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["type"] = model_type
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    (root / TRAIN_DATA).parent.mkdir(parents=True)
    prepared.train.to_csv(root / TRAIN_DATA, index=False, lineterminator="\n")
    write_schema(prepared.schema, root / SCHEMA_FILE)
    return root


def test_train_stage_run_twice_writes_byte_identical_files(
    prepared_penguins: Prepared, tmp_path: Path, pycache: Path
) -> None:
    # hgb: the model with the most arrays and objects (logreg is trained twice by the forced
    # `dvc repro` of tests/ml/test_pipeline.py).
    roots = [stage_workspace(tmp_path / name, prepared_penguins, "hgb") for name in ("a", "b")]
    processes = []
    for seed, root in enumerate(roots, start=1):
        env = pipeline_env(root / "registry", pycache)
        env.update(PYTHONPATH=str(PROJECT_ROOT), PYTHONHASHSEED=str(seed))
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "ml.stages.train"],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for process in processes:
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr

    def digest(root: Path, path: Path) -> str:
        return hashlib.sha256((root / path).read_bytes()).hexdigest()

    for output in (MODEL_FILE, CV_METRICS):
        assert digest(roots[0], output) == digest(roots[1], output), output


def test_more_folds_than_rows_of_a_class_names_the_param(
    prepared_penguins: Prepared, params: Params
) -> None:
    features, labels = split(prepared_penguins)
    too_many: ModelParams = params.model.model_copy(update={"cv_folds": 80})

    with pytest.raises(ParamsError, match=r"params model\.cv_folds=80 .*class 'Chinstrap'"):
        train(features, labels, prepared_penguins.schema, too_many)
