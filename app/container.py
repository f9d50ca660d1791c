"""The one place where the service is wired together."""

from __future__ import annotations

import functools
import logging

from dependency_injector import containers, providers

from app.feedback.bandit import BanditLoop
from app.feedback.ids import RequestIds
from app.feedback.recorder import PredictionRecorder
from app.feedback.report import ReportExporter
from app.feedback.service import FeedbackService
from app.feedback.store import StoreHandle, default_state_url, namespace_of
from app.metrics import ServiceMetrics, StreamMetrics
from app.registry.store import ModelRegistry
from app.retraining.gitlab import GitLabTrigger
from app.retraining.trigger import RetrainTrigger, TriggerSettings
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

logger = logging.getLogger(__name__)


def state_store(settings: Settings) -> StoreHandle:
    """The store every worker and replica shares (feedback, bandit, retraining decisions)."""
    url = settings.state_url
    if url is None:
        url, shared = default_state_url(settings.registry_url)
        if not shared:
            logger.warning(
                "feedback state is kept in %s, which other replicas do not see: set "
                "ML_API_STATE_URL=redis://... for a cluster",
                url,
            )
    return StoreHandle(url, namespace_of(settings.registry_url))


def feedback_store(settings: Settings, store: StoreHandle) -> StoreHandle | None:
    """The shared store for feedback, or None when feedback is off (no ML_API_FEEDBACK_TOKEN)."""
    return store if settings.feedback_token is not None else None


def gitlab_trigger(settings: Settings) -> GitLabTrigger | None:
    if settings.gitlab_url is None or settings.gitlab_project is None:
        return None
    assert settings.gitlab_trigger_token is not None  # the settings check all three
    return GitLabTrigger(
        settings.gitlab_url,
        settings.gitlab_project,
        settings.gitlab_trigger_token,
        settings.gitlab_ref,
    )


def request_id_secret(settings: Settings) -> bytes | None:
    """Our request ids are signed with a key derived from the feedback token (shared by every
    worker and replica); without feedback they need no signature."""
    token = settings.feedback_token
    return None if token is None else token.get_secret_value().encode()


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(
        # /predict is a plain Starlette route that reads the container from app.state.
        modules=[
            "app.api.experiments",
            "app.api.admin",
            "app.api.health",
            "app.api.deployment",
            "app.api.feedback",
            "app.api.retraining",
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
    state_store = providers.Singleton(state_store, settings=settings)
    feedback_store = providers.Singleton(feedback_store, settings=settings, store=state_store)
    request_ids = providers.Singleton(
        RequestIds, secret=providers.Callable(request_id_secret, settings=settings)
    )
    recorder = providers.Singleton(
        PredictionRecorder,
        store=feedback_store,
        ids=request_ids,
        metrics=metrics,
        retention_seconds=settings.provided.feedback_retention_seconds,
        flush_seconds=settings.provided.feedback_flush_seconds,
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
        recorder=recorder,
    )
    feedback_service = providers.Singleton(
        FeedbackService,
        store=feedback_store,
        ids=request_ids,
        registry=registry,
        metrics=metrics,
        retention_seconds=settings.provided.feedback_retention_seconds,
        flush_seconds=settings.provided.feedback_flush_seconds,
        recorder=recorder,
    )
    bandit = providers.Singleton(
        BanditLoop, deployment=deployment, store=feedback_store, metrics=metrics
    )
    report_exporter = providers.Singleton(
        ReportExporter, deployment=deployment, store=feedback_store, metrics=metrics
    )
    lifecycle = providers.Singleton(
        WorkerLifecycle,
        deployment=deployment,
        drift=drift_monitor,
        metrics=metrics,
        mirror=shadow_mirror,
        guard=canary_guard,
        recorder=recorder,
        bandit=bandit,
        report_exporter=report_exporter,
        model_threads=settings.provided.model_threads,
        poll_seconds=settings.provided.poll_seconds,
        startup_retry_max_seconds=settings.provided.startup_retry_max_seconds,
        drift_interval_seconds=settings.provided.drift_interval_seconds,
        metrics_flush_seconds=settings.provided.metrics_flush_seconds,
    )
    admin_tokens = providers.Singleton(AdminTokenChecker, token=settings.provided.admin_token)
    retrain_trigger = providers.Singleton(
        RetrainTrigger,
        deployment=deployment,
        store=state_store,
        metrics=metrics,
        gitlab=providers.Singleton(gitlab_trigger, settings=settings),
        settings=providers.Singleton(
            TriggerSettings,
            dry_run=settings.provided.retrain_dry_run,
            cooldown_seconds=settings.provided.retrain_cooldown_seconds,
            min_drift_rows=settings.provided.retrain_min_drift_rows,
            min_feedbacks=settings.provided.retrain_min_feedbacks,
            min_firing_seconds=settings.provided.retrain_min_firing_seconds,
            data_source=settings.provided.retrain_data_source,
        ),
    )
    webhook_tokens = providers.Singleton(
        AdminTokenChecker, token=settings.provided.webhook_token, setting="ML_API_WEBHOOK_TOKEN"
    )
    feedback_tokens = providers.Singleton(
        AdminTokenChecker, token=settings.provided.feedback_token, setting="ML_API_FEEDBACK_TOKEN"
    )

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
