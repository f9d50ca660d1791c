"""Publishing an experiment: the one way a model enters the registry.

The training pipeline calls :func:`publish_experiment`. Before anything is written, the model
is serialised with skops, loaded back through the same checks the service runs, and its
predictions on the reference rows are recorded, so a published experiment is known to load
and to reproduce them.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pandas as pd
from pydantic import ValidationError

from app.errors import BrokenExperiment, ExperimentExists, ExperimentNotFound, InvalidSettings
from app.publishing.onnx_export import ONNX_FILE, export_checked
from app.registry.meta import ExperimentMeta, FeatureSpec, Reference, validate_tag
from app.registry.model_file import dump_model, load_model, sha256_hex, untrusted_types
from app.registry.spec import DeploymentRecord, SpecBody
from app.registry.store import ModelRegistry
from app.serving.drift import profile_training_data
from app.serving.inputs import Batch, InputSchema, batch_from_frame
from app.serving.runtime import SklearnRuntime
from app.settings import Settings

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("scikit-learn", "numpy", "pandas", "skops")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        versions[package] = metadata.version(package)
    return versions


def _labels(model: Any, features: Sequence[FeatureSpec], batch: Batch) -> list[str]:
    """Labels ``model`` gives a batch built by the serving input path."""
    probabilities = SklearnRuntime(model, features).predict_proba(batch)
    classes = [str(c) for c in model.classes_]
    return [classes[i] for i in probabilities.argmax(axis=1)]


def _already_published(registry: ModelRegistry, tag: str) -> ExperimentMeta | None:
    try:
        return registry.read_meta(tag)
    except ExperimentNotFound:
        return None


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
    existing = _already_published(registry, tag) if exist_ok else None
    if existing is not None:  # immutable: nothing to convert, check or write again
        _activate_if_none(registry, tag, activate_if_none)
        return existing
    data = dump_model(model)
    sha = sha256_hex(data)
    reloaded = load_model(data, expected_sha256=sha)
    instances = [dict(row) for row in reference_instances]
    reference_batch = InputSchema.unlimited(features).rows_to_batch(instances)
    checks = [reference_batch]
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
            instances=instances, labels=_labels(reloaded, features, reference_batch)
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
    _activate_if_none(registry, tag, activate_if_none)
    return meta


def _activate_if_none(registry: ModelRegistry, tag: str, wanted: bool) -> None:
    if not wanted:
        return
    try:
        current = registry.read_deployment()
    except BrokenExperiment as exc:  # something serves, its spec is damaged: leave it be
        logger.error("%s; not activating %s", exc.message, tag)
        return
    if current is None:
        spec = SpecBody(primary=tag)
        registry.write_deployment(
            DeploymentRecord.first(spec, at=datetime.now(UTC), by="publish", action="publish")
        )


def registry_from_settings(settings: Settings | None = None) -> ModelRegistry:
    """The registry the service reads (``ML_API_REGISTRY_URL`` and its storage options).

    Raises InvalidSettings naming the first bad setting when the environment is wrong.
    """
    if settings is None:
        try:
            settings = Settings()
        except ValidationError as exc:
            error = exc.errors()[0]
            raise InvalidSettings(f"service settings: {error['loc'][0]}: {error['msg']}") from None
    return ModelRegistry(settings.registry_url, settings.registry_storage_options)
