"""Publishing an experiment: the one way a model enters the registry.

The training pipeline calls :func:`publish_experiment`. Before anything is written, the model
is serialised with skops, loaded back through the same checks the service runs, and its
predictions on the reference rows are recorded, so a published experiment is known to load
and to reproduce them.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pandas as pd

from app.errors import ExperimentExists
from app.registry.meta import ExperimentMeta, FeatureSpec, Reference, validate_tag
from app.registry.model_file import dump_model, load_model, sha256_hex, untrusted_types
from app.registry.onnx_export import ONNX_FILE, export_checked
from app.registry.store import ModelRegistry
from app.serving.drift import profile_training_data
from app.serving.inputs import InputLimits, InputSchema, batch_from_frame
from app.serving.runtime import SklearnRuntime

VERSIONED_PACKAGES = ("scikit-learn", "numpy", "pandas", "skops")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        versions[package] = metadata.version(package)
    return versions


def _schema(features: Sequence[FeatureSpec], rows: int) -> InputSchema:
    return InputSchema(features, InputLimits(max_rows=max(rows, 1), max_string_length=10**6))


def reference_labels(
    model: Any, features: Sequence[FeatureSpec], instances: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Labels ``model`` gives ``instances`` when they go through the serving input path."""
    batch = _schema(features, len(instances)).rows_to_batch([dict(row) for row in instances])
    probabilities = SklearnRuntime(model, features).predict_proba(batch)
    classes = [str(c) for c in model.classes_]
    return [classes[i] for i in probabilities.argmax(axis=1)]


def publish_experiment(
    registry: ModelRegistry,
    *,
    tag: str,
    model: Any,
    features: Sequence[FeatureSpec],
    training_frame: pd.DataFrame,
    reference_instances: Sequence[Mapping[str, Any]],
    model_type: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    git_commit: str | None,
    extra: Mapping[str, Any] | None = None,
    check_frame: pd.DataFrame | None = None,
    exist_ok: bool = False,
    activate_if_none: bool = False,
) -> ExperimentMeta:
    """Write ``model`` and its ``meta.json`` as experiment ``tag``.

    ``training_frame`` is the data the model was fitted on (feature columns only); its
    distribution is recorded for drift monitoring. ``check_frame`` (held-out rows, feature
    columns) is used with the reference rows to check the ONNX copy. With ``exist_ok`` an
    already published tag is returned as it is (experiments are immutable) instead of raising
    ExperimentExists.
    With ``activate_if_none`` the experiment becomes active when no model is active yet.
    """
    validate_tag(tag)
    data = dump_model(model)
    sha = sha256_hex(data)
    reloaded = load_model(data, expected_sha256=sha)
    instances = [dict(row) for row in reference_instances]
    checks = [_schema(features, len(instances)).rows_to_batch(instances)]
    if check_frame is not None and len(check_frame):
        checks.append(batch_from_frame(check_frame, features))
    onnx_bytes, onnx_info = export_checked(reloaded, features, checks)
    meta = ExperimentMeta(
        tag=tag,
        created_at=datetime.now(UTC),
        git_commit=git_commit,
        model_type=model_type,
        model_sha256=sha,
        trusted_types=untrusted_types(data),
        params=dict(params),
        metrics=dict(metrics),
        classes=[str(c) for c in reloaded.classes_],
        features=list(features),
        versions=library_versions(),
        reference=Reference(
            instances=instances, labels=reference_labels(reloaded, features, instances)
        ),
        training_profile=profile_training_data(training_frame, features),
        onnx=onnx_info,
        **dict(extra or {}),
    )
    extra_files = {ONNX_FILE: onnx_bytes} if onnx_bytes is not None else {}
    try:
        registry.write_experiment(meta, data, extra_files)
    except ExperimentExists:
        if not exist_ok:
            raise
        meta = registry.read_meta(tag)
    if activate_if_none and registry.read_active_or_none() is None:
        registry.write_active(tag, updated_by="publish", previous_tag=None)
    return meta
