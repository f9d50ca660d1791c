"""Request and response bodies as the OpenAPI spec shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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

    model_tag: str
    predictions: list[RowPrediction]


class ExperimentOut(BaseModel):
    tag: str
    created_at: datetime | None
    model_type: str | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    active: bool
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
    status: str
    model_tag: str | None = None
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
