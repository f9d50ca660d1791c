"""The dataset schema shared by the stages, and frames in exactly the dtypes the service sends.

The service hands the model float64 columns (NaN for null) for numeric features and object
columns of str for categories, a missing category being ``MISSING_CATEGORY`` (ONNX string
tensors have no NaN); training and evaluation build the same, so what the model learnt is
what it will be fed. The prepared CSV files keep missing values blank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.registry import MISSING_CATEGORY, FeatureSpec
from ml.errors import DataError


class DatasetSchema(BaseModel):
    """What preprocess found: the target, its classes, and the features in input order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    classes: list[str] = Field(min_length=2)
    features: list[FeatureSpec] = Field(min_length=1)

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def numeric_names(self) -> list[str]:
        return [f.name for f in self.features if f.dtype != "category"]

    @property
    def categorical_names(self) -> list[str]:
        return [f.name for f in self.features if f.dtype == "category"]


def write_schema(schema: DatasetSchema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_schema(path: Path) -> DatasetSchema:
    try:
        return DatasetSchema.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: not found: run the preprocess stage first") from None
    except ValidationError as exc:
        raise DataError(f"{path}: not a valid schema: {exc.errors()[0]['msg']}") from None


def model_frame(frame: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """The feature columns of ``frame`` in serving dtypes, in input order."""
    columns: dict[str, pd.Series[Any]] = {}
    for feature in features:
        column = frame[feature.name]
        if feature.dtype == "category":
            present = column.notna() & (column.astype(object) != MISSING_CATEGORY)
            text = column.astype(object).where(present, MISSING_CATEGORY).map(str)
            columns[feature.name] = text.astype(object)
        else:
            columns[feature.name] = pd.to_numeric(column).astype(np.float64)
    return pd.DataFrame(columns, index=frame.index)


def read_split(path: Path, schema: DatasetSchema) -> tuple[pd.DataFrame, pd.Series[str]]:
    """Features (serving dtypes) and target labels (str) of a prepared split."""
    # Reading categories and the target as text keeps values like "01" as written.
    text_columns = {name: str for name in [*schema.categorical_names, schema.target]}
    try:
        frame = pd.read_csv(path, dtype=text_columns)
    except FileNotFoundError:
        raise DataError(f"{path}: not found: run the preprocess stage first") from None
    missing = [name for name in [*schema.feature_names, schema.target] if name not in frame]
    if missing:
        raise DataError(f"{path}: columns {missing} of the schema are missing")
    labels = frame[schema.target].astype(str)
    return model_frame(frame, schema.features), labels


def missing_mask(frame: pd.DataFrame, features: list[FeatureSpec]) -> pd.DataFrame:
    """Where a model frame holds a missing value (NaN, or MISSING_CATEGORY for categories)."""
    return pd.DataFrame(
        {
            f.name: frame[f.name] == MISSING_CATEGORY
            if f.dtype == "category"
            else frame[f.name].isna()
            for f in features
        },
        index=frame.index,
    )


def json_value(value: Any, feature: FeatureSpec) -> str | int | float | None:
    """One cell as the service takes it in JSON: None for missing, int for int features."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if feature.dtype == "category":
        return None if value == MISSING_CATEGORY else str(value)
    if feature.dtype == "int":
        return int(value)
    return float(value)


def json_rows(frame: pd.DataFrame, features: list[FeatureSpec]) -> list[dict[str, Any]]:
    """Rows of a model frame as JSON-able /predict instances."""
    return [
        {f.name: json_value(record[f.name], f) for f in features}
        for record in frame.to_dict(orient="records")
    ]
