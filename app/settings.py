"""Service settings, read from the environment (prefix ``ML_API_``) when the app is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Kafka's own rule for topic names.
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"


class Settings(BaseSettings):
    """Every knob of the service; the README's settings table mirrors these fields."""

    model_config = SettingsConfigDict(env_prefix="ML_API_", extra="ignore", frozen=True)

    registry_url: str = Field(
        default=str(PROJECT_ROOT / "registry"),
        description="fsspec URL of the model registry: a local folder or s3://bucket/prefix.",
    )
    registry_storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for the registry (JSON object); a key given here "
        "replaces the built-in one (S3: 2 s connect timeout, 2 attempts per try).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for management endpoints; unset disables them.",
    )
    feedback_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for POST /feedback (16+ characters, not the admin token); "
        "unset disables feedback.",
    )
    state_url: str | None = Field(
        default=None,
        description="Feedback store shared by workers and replicas: sqlite:////path or "
        "redis://host:port/db; unset: SQLite beside a local registry.",
    )
    feedback_retention_seconds: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="How long a prediction can receive feedback.",
    )
    feedback_flush_seconds: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="How often a worker writes what it served to the feedback store.",
    )
    webhook_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Alertmanager sends to POST /alerts/webhook (16+ characters); "
        "unset disables the webhook.",
    )
    gitlab_url: str | None = Field(
        default=None, description="GitLab base URL for the retraining pipeline trigger."
    )
    gitlab_project: str | None = Field(
        default=None, description="GitLab project id or path whose pipeline retrains."
    )
    gitlab_trigger_token: SecretStr | None = Field(
        default=None, description="GitLab pipeline trigger token."
    )
    gitlab_ref: str = Field(default="main", description="Branch the retraining pipeline runs on.")
    retrain_dry_run: bool = Field(
        default=False, description="Decide and record, but never call GitLab."
    )
    retrain_cooldown_seconds: float = Field(
        default=6 * 3600, gt=0, description="At most one retraining per model in this time."
    )
    retrain_min_drift_rows: int = Field(
        default=1000, ge=0, description="Rows a model must have served to retrain on drift."
    )
    retrain_min_feedbacks: int = Field(
        default=50, ge=0, description="Labelled feedbacks needed to retrain on quality."
    )
    retrain_min_firing_seconds: float = Field(
        default=0, ge=0, description="How long an alert must have fired before it counts."
    )
    retrain_data_source: str | None = Field(
        default=None,
        description="DATA_SOURCE handed to the retraining pipeline (a fresh CSV/Parquet URL).",
    )
    poll_seconds: float = Field(
        default=2.0, gt=0, description="How often each worker re-reads the active pointer."
    )
    max_rows: int = Field(default=10_000, gt=0, description="Most rows one /predict may carry.")
    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest request body /predict accepts."
    )
    max_string_length: int = Field(
        default=256, gt=0, description="Longest categorical value accepted in an input row."
    )
    host: str = Field(default="127.0.0.1", description="Interface `ml-api serve` binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `ml-api serve` binds to.")
    workers: int = Field(default=1, ge=1, description="Worker processes for `ml-api serve`.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the service."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (JSON list); empty keeps CORS off.",
    )
    shutdown_grace_seconds: int = Field(
        default=20, gt=0, description="On SIGTERM, how long in-flight requests may take to end."
    )
    startup_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest back-off between attempts to load the active model at start.",
    )
    runtime: Literal["auto", "sklearn", "onnx"] = Field(
        default="auto",
        description="Model runtime: auto serves the ONNX copy when publishing verified it.",
    )
    model_threads: int = Field(
        default=1,
        ge=1,
        description="OpenMP/BLAS threads per worker for model calls; scale with workers.",
    )
    batch_max_rows: int = Field(
        default=256, gt=0, description="Most rows one micro-batched model call may carry."
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra wait to fill a batch, only while requests are already queued.",
    )
    shadow_queue_size: int = Field(
        default=1000,
        gt=0,
        description="Mirrored requests a worker keeps waiting for its shadows; more are dropped.",
    )
    drift_window: int = Field(
        default=5_000, gt=0, description="Rows kept per worker to compute input drift (PSI)."
    )
    drift_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often each worker recomputes drift from its window."
    )
    metrics_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "With several workers, how often each writes the request metrics it holds back to "
            "the shared files (a scrape answered by another worker sees them this late at most)."
        ),
    )

    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers for `ml-api stream` (comma-separated host:port).",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        ge=1_000,
        le=300_000,
        description="Consumer-group session timeout: how soon a dead consumer's partitions "
        "move to another one (joins take a fraction of it).",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=60_000,
        description="Longest a fetch waits at the broker for new messages (Kafka answers as "
        "soon as one arrives; brokers that do not, e.g. Tansu, add up to this much latency).",
    )
    stream_input_topic: str = Field(
        default="ml-api.requests",
        pattern=TOPIC_PATTERN,
        description="Topic `ml-api stream` reads prediction requests from.",
    )
    stream_output_topic: str = Field(
        default="ml-api.predictions",
        pattern=TOPIC_PATTERN,
        description="Topic the answers go to, keyed like their request.",
    )
    stream_error_topic: str = Field(
        default="ml-api.errors",
        pattern=TOPIC_PATTERN,
        description="Topic refused messages go to, with the reason in headers.",
    )
    stream_group: str = Field(
        default="ml-api-stream",
        min_length=1,
        max_length=255,
        description="Consumer group of the stream consumers: they share the input partitions.",
    )
    stream_max_in_flight: int = Field(
        default=512,
        gt=0,
        description="Messages taken but not yet answered and acknowledged; fetching pauses "
        "when this many are in flight.",
    )
    stream_batch_max_messages: int = Field(
        default=128,
        gt=0,
        description="Most messages taken from the consumer at once and scored concurrently.",
    )
    stream_batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=10_000,
        description="Extra wait for more messages when fewer than a batch are buffered.",
    )
    stream_commit_interval_ms: float = Field(
        default=500.0,
        gt=0,
        description="Least time between two offset commits of the stream consumer.",
    )
    stream_metrics_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="Port of the stream consumer's Prometheus /metrics (0: none).",
    )
    oip_model_name: str = Field(
        default="ml-api",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Model name the Open Inference Protocol (v2) endpoints answer under.",
    )

    @property
    def batch_max_wait_seconds(self) -> float:
        return self.batch_max_wait_ms / 1000

    @field_validator("registry_url")
    @classmethod
    def _registry_url_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("ML_API_REGISTRY_URL must not be empty")
        return value.strip()

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_not_blank(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",") if server.strip()]
        if not servers:
            raise ValueError("ML_API_KAFKA_BOOTSTRAP must name at least one host:port")
        return ",".join(servers)

    @model_validator(mode="after")
    def _stream_topics_differ(self) -> Settings:
        topics = [self.stream_input_topic, self.stream_output_topic, self.stream_error_topic]
        if len(set(topics)) != len(topics):
            # An answer written to the input topic would be consumed again, forever.
            raise ValueError(
                "ML_API_STREAM_INPUT_TOPIC, ML_API_STREAM_OUTPUT_TOPIC and "
                f"ML_API_STREAM_ERROR_TOPIC must be three different topics: {topics}"
            )
        return self

    @field_validator("admin_token", "feedback_token", "webhook_token")
    @classmethod
    def _token_strong_enough(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError(
                f"ML_API_{str(info.field_name).upper()} must be at least 16 characters"
            )
        return value

    @model_validator(mode="after")
    def _tokens_differ(self) -> Settings:
        tokens = {
            name: token.get_secret_value()
            for name, token in (
                ("ML_API_ADMIN_TOKEN", self.admin_token),
                ("ML_API_FEEDBACK_TOKEN", self.feedback_token),
                ("ML_API_WEBHOOK_TOKEN", self.webhook_token),
            )
            if token is not None
        }
        if len(set(tokens.values())) < len(tokens):
            raise ValueError(
                f"{', '.join(tokens)} must all differ: a client allowed one kind of call must "
                "not be able to make another (change the deployment, poison statistics)"
            )
        gitlab = [self.gitlab_url, self.gitlab_project, self.gitlab_trigger_token]
        if any(v is not None for v in gitlab) and not all(v is not None for v in gitlab):
            raise ValueError(
                "ML_API_GITLAB_URL, ML_API_GITLAB_PROJECT and ML_API_GITLAB_TRIGGER_TOKEN go "
                "together: set all three or none"
            )
        return self
