"""Request and response bodies as the OpenAPI spec shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.registry.spec import SpecBody, SpecChange

EXAMPLE_ROW: dict[str, Any] = {
    "island": "Biscoe",
    "bill_length_mm": 48.6,
    "bill_depth_mm": 16.0,
    "flipper_length_mm": 230.0,
    "body_mass_g": 5800.0,
    "sex": "male",
}


class PredictRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"instances": [EXAMPLE_ROW]}]})

    instances: list[dict[str, str | float | int | None]] = Field(
        min_length=1, description="Rows keyed by feature name, as the active model's schema says."
    )


class RowPrediction(BaseModel):
    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_tag": "a1b2c3d",
                    "request_id": "3f2b6c1e9a4d4e0f8b7a6c5d4e3f2a1b",
                    "predictions": [
                        {
                            "label": "Gentoo",
                            "probabilities": {"Adelie": 0.01, "Chinstrap": 0.01, "Gentoo": 0.98},
                        }
                    ],
                }
            ]
        },
    )

    model_tag: str = Field(description="The experiment that answered this request.")
    request_id: str = Field(
        description="The caller's X-Request-ID, or one made up; also in the X-Request-ID "
        "response header."
    )
    predictions: list[RowPrediction]
    ignored_columns: list[str] | None = Field(
        default=None, description="CSV columns that no feature uses (ignored)."
    )


class ExperimentOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    tag: str
    created_at: datetime | None
    model_type: str | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    classes: list[str] = Field(default_factory=list, description="Labels the model predicts.")
    active: bool = Field(description="True for the primary (the model serving most traffic).")
    role: Literal["primary", "candidate", "shadow"] | None = Field(
        default=None, description="The experiment's role in the deployment, if any."
    )
    traffic_percent: float | None = Field(
        default=None,
        description="Percent of requests it answers (shadows: percent of requests mirrored).",
    )
    broken: bool = False
    error: str | None = None


class ReplaceRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"tag": "a1b2c3d"}]})

    tag: str = Field(description="Tag of a published experiment.", max_length=64)


class ReplaceResponse(BaseModel):
    previous_tag: str | None
    active_tag: str
    load_ms: float


class HealthResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: str
    model_tag: str | None = Field(default=None, description="The primary this worker serves.")
    revision: int | None = Field(
        default=None, description="Revision of the deployment spec this worker serves."
    )
    serving_since: datetime | None = Field(
        default=None,
        description="When this worker started serving the model: compare with the "
        "pointer's updated_at to see how long a swap took to reach it.",
    )


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class PromoteRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"tag": "a1b2c3d-p5e6f7a8"}]})

    tag: str = Field(description="A candidate of the deployment.", max_length=64)


class DeploymentOut(BaseModel):
    """The spec serving now, how it came about, and each arm's live figures."""

    revision: int
    updated_at: datetime
    updated_by: str
    action: str
    reason: str
    spec: SpecBody
    previous: SpecBody | None
    history: list[SpecChange]
    figures: dict[str, Any] = Field(
        description="Per arm: configured and observed share, requests, errors, latency; per "
        "shadow: requests compared, label agreement, probability difference, drops, latency."
    )
    load_ms: float | None = Field(
        default=None, description="Time spent loading new models for this change."
    )


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


MANAGEMENT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Body is not valid JSON."),
    401: _error("Missing or wrong bearer token."),
    403: _error("No admin token is configured: management is disabled."),
    404: _error("No experiment with that tag."),
    409: _error("The change does not apply to the current spec (e.g. not a candidate)."),
    413: _error("Body larger than ML_API_MAX_UPLOAD_BYTES."),
    422: _error("Invalid spec (field, weights, roles), or a model failed a load check."),
    503: _error("Registry unreachable."),
}


class FeedbackIn(BaseModel):
    """One feedback: the true label, or a reward in [0, 1], of one row of a served request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(max_length=256, description="The request id the prediction returned.")
    row: int = Field(default=0, ge=0, le=1_000_000, description="Row of a multi-row request.")
    label: str | None = Field(default=None, max_length=256, description="The true class.")
    reward: float | None = Field(
        default=None, ge=0, le=1, allow_inf_nan=False, description="A reward in [0, 1]."
    )

    @model_validator(mode="after")
    def _label_or_reward(self) -> FeedbackIn:
        if (self.label is None) == (self.reward is None):
            raise ValueError("give exactly one of label and reward")
        return self


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackIn] = Field(min_length=1, max_length=10_000)


class FeedbackOut(BaseModel):
    accepted: int
    duplicates: int = Field(description="Items whose (request id, row) had feedback already.")
    rejected: int
    results: list[dict[str, Any]] = Field(
        description="Per item: index, status (accepted, duplicate, or the refusal code), "
        "model_tag and correct when joined, message when refused."
    )


FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("Missing or wrong bearer token (ML_API_FEEDBACK_TOKEN)."),
    403: _error("Feedback is disabled, or the request id is forged."),
    404: _error("No prediction with that request id."),
    410: _error("The prediction is older than the retention."),
    422: _error("Malformed item or request id, row out of range, or a label the model lacks."),
    503: _error("The feedback store is unreachable (predictions are not affected)."),
}
