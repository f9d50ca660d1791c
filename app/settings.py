"""Service settings, read from the environment (prefix ``ML_API_``) when the app is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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

    @field_validator("admin_token")
    @classmethod
    def _token_strong_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("ML_API_ADMIN_TOKEN must be at least 16 characters")
        return value
