"""The public formats of the registry: ``meta.json`` of an experiment and ``active.json``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.errors import InvalidTag

# How a missing category reaches the model: an empty string, which both the training
# pipeline's imputer (``missing_values=""``) and its ONNX conversion understand (ONNX string
# tensors have no NaN). Part of the contract between the pipeline and the service.
MISSING_CATEGORY = ""

# Tags become path segments in the registry: no separators, no dots first, bounded length.
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

JsonScalar = str | int | float | bool | None


def validate_tag(tag: str) -> str:
    """Return ``tag`` unchanged when it is a safe experiment tag, raise InvalidTag otherwise."""
    if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
        raise InvalidTag(
            f"invalid experiment tag {tag!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return tag


class FeatureSpec(BaseModel):
    """One input column, in the order the model takes them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    dtype: Literal["float", "int", "category"]
    categories: list[str] | None = None
    nullable: bool = False

    @model_validator(mode="after")
    def _categories_only_for_categorical(self) -> FeatureSpec:
        if self.dtype == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs its categories")
        if self.dtype != "category" and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: only category features have categories")
        return self


class NumericProfile(BaseModel):
    """Training distribution of a numeric feature: bin edges and the share in each bin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["numeric"] = "numeric"
    edges: list[float]
    proportions: list[float]
    missing: float = 0.0


class CategoricalProfile(BaseModel):
    """Training distribution of a categorical feature: share of each category."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["categorical"] = "categorical"
    frequencies: dict[str, float]
    missing: float = 0.0


FeatureProfile = NumericProfile | CategoricalProfile


class Reference(BaseModel):
    """A handful of rows and the labels the model gave them at publish time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instances: list[dict[str, JsonScalar]] = Field(min_length=1)
    labels: list[str]

    @model_validator(mode="after")
    def _one_label_per_row(self) -> Reference:
        if len(self.instances) != len(self.labels):
            raise ValueError("reference: instances and labels differ in length")
        return self


class OnnxInfo(BaseModel):
    """``onnx`` key of meta.json: whether an ONNX copy exists and how it compared."""

    model_config = ConfigDict(frozen=True, extra="allow")

    status: Literal["ok", "failed"]
    file: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    checked_rows: int = 0
    max_abs_diff: float | None = None
    tolerance: float | None = None
    note: str | None = None

    @field_validator("file")
    @classmethod
    def _file_is_a_plain_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\\" in value or value.startswith(".")):
            raise ValueError("onnx.file must be a plain file name inside the experiment")
        return value


class ExperimentMeta(BaseModel):
    """``experiments/<tag>/meta.json``: everything needed to serve, compare and audit a model."""

    model_config = ConfigDict(frozen=True, extra="allow", protected_namespaces=())

    tag: str
    created_at: datetime
    git_commit: str | None = None
    model_type: str
    model_file: str = "model.skops"
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    trusted_types: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] = Field(min_length=2)
    features: list[FeatureSpec] = Field(min_length=1)
    versions: dict[str, str] = Field(default_factory=dict)
    reference: Reference
    training_profile: dict[str, FeatureProfile] = Field(default_factory=dict)
    onnx: OnnxInfo | None = None

    @field_validator("tag")
    @classmethod
    def _tag_is_safe(cls, value: str) -> str:
        if not TAG_PATTERN.fullmatch(value):
            raise ValueError(f"invalid tag {value!r}")
        return value

    @field_validator("model_file")
    @classmethod
    def _model_file_is_a_plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.startswith("."):
            raise ValueError("model_file must be a plain file name inside the experiment")
        return value

    @model_validator(mode="after")
    def _features_unique(self) -> ExperimentMeta:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError("features: names must be unique")
        return self


class ActivePointer(BaseModel):
    """``active.json``: which experiment serves, who chose it, when, and what it replaced."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tag: str
    updated_at: datetime
    updated_by: str = "unknown"
    previous_tag: str | None = None

    @field_validator("tag")
    @classmethod
    def _tag_is_safe(cls, value: str) -> str:
        if not TAG_PATTERN.fullmatch(value):
            raise ValueError(f"invalid tag {value!r}")
        return value


class ExperimentSummary(BaseModel):
    """One line of the experiment listing; ``error`` is set when its metadata is broken."""

    model_config = ConfigDict(frozen=True)

    tag: str
    created_at: datetime | None = None
    model_type: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    classes: list[str] = Field(default_factory=list)
    broken: bool = False
    error: str | None = None

    @classmethod
    def of(cls, meta: ExperimentMeta) -> ExperimentSummary:
        return cls(
            tag=meta.tag,
            created_at=meta.created_at,
            model_type=meta.model_type,
            metrics=meta.metrics,
            params=meta.params,
            classes=meta.classes,
        )
