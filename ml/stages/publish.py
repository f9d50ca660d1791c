"""Stage ``publish``: write the experiment to the model registry the service reads.

Everything is read and checked before the first byte reaches the registry, and
``publish_experiment`` writes ``meta.json`` last, so a failure leaves nothing published.
The registry URL comes from the service settings (``ML_API_REGISTRY_URL``).

Two records: ``reports/published-model.json``, the stage's DVC output, says what this pipeline
publishes (model sha256 and type, params hash, data fingerprints) and depends on the stage's
inputs only, so ``dvc.lock`` stays the same from commit to commit; ``reports/publish.json``
says what happened (tag, commit, whether it existed already, whether it is active) and is no
DVC output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from app.publishing import publish_experiment, registry_from_settings
from app.registry import ExperimentMeta, FeatureSpec, ModelRegistry, sha256_hex
from ml.errors import DataError, run_stage
from ml.estimators import single_threaded
from ml.layout import (
    CV_METRICS,
    MODEL_FILE,
    PUBLISH_RECORD,
    PUBLISHED_MODEL,
    RAW_DATA,
    SCHEMA_FILE,
    SOURCE_RECORD,
    TEST_DATA,
    TEST_METRICS,
    TRAIN_DATA,
    read_json,
    read_model,
    write_json,
)
from ml.params import Params, params_hash, read_params_document, validate_params
from ml.schema import DatasetSchema, json_rows, missing_mask, read_schema, read_split
from ml.tagging import TagInfo, resolve_tag


@dataclass(frozen=True)
class Experiment:
    """Everything one publish writes, gathered (and so checked) before writing any of it."""

    model: Any
    schema: DatasetSchema
    training_frame: pd.DataFrame
    test_frame: pd.DataFrame
    reference_instances: list[dict[str, Any]]
    params: Params
    params_document: dict[str, Any]
    metrics: dict[str, Any]
    cv_scores: dict[str, Any]
    data_fingerprint: str
    source_record: dict[str, Any]
    model_sha256: str


def publish(registry: ModelRegistry, experiment: Experiment, tag: TagInfo) -> ExperimentMeta:
    """Publish ``experiment`` as ``tag`` (kept as is when already published); the first
    experiment of an empty registry becomes the active one."""
    model_params = experiment.params.model
    return publish_experiment(
        registry,
        tag=tag.tag,
        model=experiment.model,
        features=experiment.schema.features,
        training_frame=experiment.training_frame,
        reference_instances=experiment.reference_instances,
        check_frame=experiment.test_frame,
        model_type=model_params.type,
        params=recorded_params(experiment.params_document, model_params.type),
        metrics=experiment.metrics,
        git_commit=tag.git_commit,
        extra={
            "data_fingerprint": experiment.data_fingerprint,
            "data_source": experiment.params.data.source,
            "data_source_sha256": experiment.source_record["sha256"],
            "data_contract": experiment.params.data.contract,
            "cv_scores": experiment.cv_scores,
            "params_hash": params_hash(experiment.params_document),
        },
        exist_ok=True,
        activate_if_none=True,
    )


def recorded_params(document: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """params.yaml without the hyperparameters of the estimator not chosen."""
    model = {
        key: value
        for key, value in document["model"].items()
        if key not in {"logreg", "hgb"} or key == model_type
    }
    return {**document, "model": model}


def reference_frame(
    test_features: pd.DataFrame,
    test_labels: pd.Series[str],
    train_features: pd.DataFrame,
    features: list[FeatureSpec],
    count: int,
) -> pd.DataFrame:
    """Rows the service replays before serving: one per class, one with a missing value
    (from the training split if the test split has none, so imputation is exercised),
    then the next test rows, ``count`` in all."""
    positions = [
        int((test_labels == label).to_numpy().argmax()) for label in sorted(test_labels.unique())
    ]
    incomplete = missing_mask(test_features, features).any(axis=1).to_numpy()
    if incomplete.any():
        positions.append(int(incomplete.argmax()))
    positions.extend(range(len(test_features)))
    chosen = test_features.iloc[list(dict.fromkeys(positions))[:count]]
    train_incomplete = train_features[missing_mask(train_features, features).any(axis=1)]
    if not incomplete.any() and not train_incomplete.empty:
        chosen = pd.concat([chosen.iloc[: count - 1], train_incomplete.iloc[:1]])
    return chosen


def gather(params_document: dict[str, Any]) -> Experiment:
    params = validate_params(params_document)
    schema = read_schema(SCHEMA_FILE)
    training_frame, _ = read_split(TRAIN_DATA, schema)
    test_frame, test_labels = read_split(TEST_DATA, schema)
    reference = reference_frame(
        test_frame, test_labels, training_frame, schema.features, params.publish.reference_rows
    )
    return Experiment(
        model=read_model(MODEL_FILE),
        schema=schema,
        training_frame=training_frame,
        test_frame=test_frame,
        reference_instances=json_rows(reference, schema.features),
        params=params,
        params_document=params_document,
        metrics=read_json(TEST_METRICS),
        cv_scores=read_json(CV_METRICS),
        data_fingerprint=_sha256_file(RAW_DATA),
        source_record=read_json(SOURCE_RECORD),
        model_sha256=_sha256_file(MODEL_FILE),
    )


def _sha256_file(path: Path) -> str:
    try:
        return sha256_hex(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: not found: run the stage that writes it first") from None


def _run() -> None:
    document = read_params_document()
    experiment = gather(document)
    tag = resolve_tag(Path.cwd(), document, os.environ)
    registry = registry_from_settings()
    existed = tag.tag in registry.list_tags()
    meta = publish(registry, experiment, tag)
    if existed and meta.metrics != experiment.metrics:
        print(
            f"publish: warning: experiment {tag.tag!r} was already published with other "
            "metrics and is kept (experiments are immutable); commit your changes or set "
            "ML_API_EXPERIMENT_TAG to publish this one",
            file=sys.stderr,
        )
    write_json(
        PUBLISHED_MODEL,
        {
            "model_sha256": experiment.model_sha256,
            "model_type": experiment.params.model.type,
            "params_hash": params_hash(document),
            "data_fingerprint": experiment.data_fingerprint,
            "data_source_sha256": experiment.source_record["sha256"],
        },
    )
    deployment = registry.read_deployment()
    write_json(
        PUBLISH_RECORD,
        {
            "tag": meta.tag,
            "git_commit": meta.git_commit,
            "model_type": meta.model_type,
            "model_sha256": meta.model_sha256,
            "already_published": existed,
            "active": deployment is not None and deployment.spec.primary == meta.tag,
        },
    )
    state = "already published" if existed else "published"
    print(f"publish: experiment {meta.tag} ({meta.model_type}) {state}")


def main() -> None:
    with single_threaded():
        run_stage("publish", _run)


if __name__ == "__main__":
    main()
