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
    400: _error("Body is not valid JSON."),
    401: _error("Missing or wrong bearer token (ML_API_FEEDBACK_TOKEN)."),
    403: _error("Feedback is disabled, or the request id is forged."),
    404: _error("No prediction with that request id."),
    410: _error("The prediction is older than the retention."),
    422: _error("Malformed item or request id, row out of range, or a label the model lacks."),
    503: _error("The feedback store is unreachable (predictions are not affected)."),
}


# -- Open Inference Protocol (v2) ------------------------------------------------------------
# Shapes of the OIP REST bodies as ml-api answers them (KServe's required_api.md); only for the
# OpenAPI document: the routes parse and encode with app/codecs/oip.py.

OIP_EXAMPLE_PANDAS: dict[str, Any] = {
    "id": "order-1001",
    "parameters": {"content_type": "pd"},
    "inputs": [
        {"name": "island", "datatype": "BYTES", "shape": [1], "data": ["Biscoe"]},
        {"name": "bill_length_mm", "datatype": "FP64", "shape": [1], "data": [48.6]},
        {"name": "bill_depth_mm", "datatype": "FP64", "shape": [1], "data": [16.0]},
        {"name": "flipper_length_mm", "datatype": "FP64", "shape": [1], "data": [230.0]},
        {"name": "body_mass_g", "datatype": "FP64", "shape": [1], "data": [5800.0]},
        {"name": "sex", "datatype": "BYTES", "shape": [1], "data": ["male"]},
    ],
    "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
}
OIP_EXAMPLE_TENSOR: dict[str, Any] = {
    "id": "order-1002",
    "inputs": [
        {
            "name": "input-0",
            "datatype": "FP64",
            "shape": [2, 4],
            "data": [[39.1, 18.7, 181.0, 3750.0], [46.5, 17.9, 192.0, 3500.0]],
        }
    ],
    "outputs": [{"name": "predict_proba", "parameters": {"datatype": "FP32"}}],
}
OIP_EXAMPLE_RESPONSE: dict[str, Any] = {
    "model_name": "ml-api",
    "model_version": "a1b2c3d",
    "id": "order-1001",
    "outputs": [
        {
            "name": "predict",
            "datatype": "BYTES",
            "shape": [1],
            "data": ["Gentoo"],
            "parameters": {"content_type": "str"},
        },
        {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": [1, 3],
            "data": [0.01, 0.01, 0.98],
            "parameters": {"classes": ["Adelie", "Chinstrap", "Gentoo"]},
        },
    ],
}

OipDatatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


class OipRequestInput(BaseModel):
    name: str = Field(description="A feature name (pandas codec), or any name (one tensor).")
    shape: list[int] = Field(description="[rows] or [rows, 1] per column; [rows, features].")
    datatype: OipDatatype = Field(description="BYTES for strings, FP32/FP64/INT* for numbers.")
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="Row-major, flat or nested; null for a missing value.")


class OipRequestOutput(BaseModel):
    name: Literal["predict", "predict_proba"]
    parameters: dict[str, Any] | None = Field(
        default=None, description='predict_proba: {"datatype": "FP32"} for single precision.'
    )


class OipInferenceRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [OIP_EXAMPLE_PANDAS, OIP_EXAMPLE_TENSOR]}
    )

    id: str | None = Field(default=None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description='content_type "pd": one input per feature column; none or "np": one 2-D '
        "numeric tensor (all-numeric models).",
    )
    inputs: list[OipRequestInput] = Field(min_length=1)
    outputs: list[OipRequestOutput] | None = Field(
        default=None, description="Outputs to return; both when absent."
    )


class OipResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class OipInferenceResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(), json_schema_extra={"examples": [OIP_EXAMPLE_RESPONSE]}
    )

    model_name: str
    model_version: str = Field(description="The experiment tag that served the request.")
    id: str = Field(description="The request's id, else its X-Request-ID (or a new one).")
    parameters: dict[str, Any] | None = None
    outputs: list[OipResponseOutput]


class OipMetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 for the variable batch dimension.")
    parameters: dict[str, Any] | None = None


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="Loaded experiment tags (the primary first).")
    platform: str
    inputs: list[OipMetadataTensor]
    outputs: list[OipMetadataTensor]
    parameters: dict[str, Any] | None = None


class OipError(BaseModel):
    error: str = Field(description="What was wrong, naming the input, row or field.")


class OipRepositoryIndexRequest(BaseModel):
    ready: bool | None = Field(default=None, description="true: only loaded experiments.")


class OipRepositoryEntry(BaseModel):
    name: str = Field(description="Experiment tag.")
    state: Literal["READY", "UNAVAILABLE"]
    reason: str = Field(description="Its role when loaded; why not, or why it is broken.")


class OipRepositoryChange(BaseModel):
    name: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str
    primary: str = Field(description="The primary after the change.")
    load_ms: float = Field(description="Time spent loading new models.")
