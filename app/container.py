"""The one place where the service is wired together."""

from __future__ import annotations

import functools

from dependency_injector import containers, providers

from app.metrics import ServiceMetrics
from app.registry.store import ModelRegistry
from app.security import AdminTokenChecker
from app.serving.batching import MicroBatcher
from app.serving.drift import DriftMonitor
from app.serving.holder import ModelHolder
from app.serving.inputs import InputLimits
from app.serving.model import load_verified
from app.serving.prediction import PredictionService
from app.settings import Settings


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(
        # /predict is a plain Starlette route that reads the container from app.state.
        modules=["app.api.experiments", "app.api.admin", "app.api.health"]
    )

    settings = providers.Dependency(instance_of=Settings)

    registry = providers.Singleton(
        ModelRegistry,
        url=settings.provided.registry_url,
        storage_options=settings.provided.registry_storage_options,
    )
    metrics = providers.Singleton(ServiceMetrics)
    input_limits = providers.Singleton(
        InputLimits,
        max_rows=settings.provided.max_rows,
        max_string_length=settings.provided.max_string_length,
    )
    model_loader = providers.Callable(
        functools.partial, load_verified, runtime=settings.provided.runtime
    )
    model_holder = providers.Singleton(
        ModelHolder, registry=registry, metrics=metrics, limits=input_limits, loader=model_loader
    )
    batcher = providers.Singleton(
        MicroBatcher,
        max_rows=settings.provided.batch_max_rows,
        max_wait_seconds=settings.provided.batch_max_wait_seconds,
    )
    drift_monitor = providers.Singleton(DriftMonitor, window_rows=settings.provided.drift_window)
    prediction_service = providers.Singleton(
        PredictionService,
        holder=model_holder,
        metrics=metrics,
        drift=drift_monitor,
        batcher=batcher,
    )
    admin_tokens = providers.Singleton(AdminTokenChecker, token=settings.provided.admin_token)
