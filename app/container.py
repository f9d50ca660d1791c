"""The one place where the service is wired together."""

from __future__ import annotations

import functools

from dependency_injector import containers, providers

from app.metrics import ServiceMetrics, StreamMetrics
from app.registry.store import ModelRegistry
from app.security import AdminTokenChecker
from app.serving.batching import MicroBatcher
from app.serving.deployment import Deployment
from app.serving.drift import DriftMonitor
from app.serving.guard import CanaryGuard
from app.serving.inputs import InputLimits
from app.serving.lifecycle import WorkerLifecycle
from app.serving.model import load_verified
from app.serving.pool import ModelPool
from app.serving.prediction import PredictionService
from app.serving.shadow import InFlight, ShadowMirror
from app.settings import Settings
from app.streaming.config import StreamConfig
from app.streaming.consumer import StreamConsumer
from app.streaming.payload import PayloadDecoder


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(
        # /predict is a plain Starlette route that reads the container from app.state.
        modules=[
            "app.api.experiments",
            "app.api.admin",
            "app.api.health",
            "app.api.deployment",
        ]
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
    model_pool = providers.Singleton(
        ModelPool, registry=registry, metrics=metrics, limits=input_limits, loader=model_loader
    )
    deployment = providers.Singleton(
        Deployment, registry=registry, pool=model_pool, metrics=metrics
    )
    batcher = providers.Singleton(
        MicroBatcher,
        max_rows=settings.provided.batch_max_rows,
        max_wait_seconds=settings.provided.batch_max_wait_seconds,
    )
    drift_monitor = providers.Singleton(DriftMonitor, window_rows=settings.provided.drift_window)
    in_flight = providers.Singleton(InFlight)
    shadow_mirror = providers.Singleton(
        ShadowMirror,
        metrics=metrics,
        queue_size=settings.provided.shadow_queue_size,
        batch_rows=settings.provided.batch_max_rows,
        in_flight=in_flight,
    )
    canary_guard = providers.Singleton(CanaryGuard, deployment=deployment, metrics=metrics)
    prediction_service = providers.Singleton(
        PredictionService,
        deployment=deployment,
        metrics=metrics,
        drift=drift_monitor,
        batcher=batcher,
        mirror=shadow_mirror,
        guard=canary_guard,
        in_flight=in_flight,
    )
    lifecycle = providers.Singleton(
        WorkerLifecycle,
        deployment=deployment,
        drift=drift_monitor,
        metrics=metrics,
        mirror=shadow_mirror,
        guard=canary_guard,
        model_threads=settings.provided.model_threads,
        poll_seconds=settings.provided.poll_seconds,
        startup_retry_max_seconds=settings.provided.startup_retry_max_seconds,
        drift_interval_seconds=settings.provided.drift_interval_seconds,
    )
    admin_tokens = providers.Singleton(AdminTokenChecker, token=settings.provided.admin_token)

    # `ml-api stream`: the same prediction service and lifecycle, fed from Kafka.
    stream_metrics = providers.Singleton(StreamMetrics)
    payload_decoder = providers.Singleton(
        PayloadDecoder, max_bytes=settings.provided.max_upload_bytes
    )
    stream_config = providers.Singleton(StreamConfig.from_settings, settings)
    stream_consumer = providers.Singleton(
        StreamConsumer,
        service=prediction_service,
        deployment=deployment,
        decoder=payload_decoder,
        metrics=stream_metrics,
        config=stream_config,
    )
