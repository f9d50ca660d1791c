"""Stage ``preprocess``: validate the raw data, infer the feature schema, split train/test.

Outputs the two splits (features and target), ``schema.json`` (the model's input schema as
FeatureSpec) and ``validation.json`` (the missing-value report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError
from sklearn.model_selection import train_test_split

from app.registry import FeatureSpec
from ml.errors import DataError, run_stage
from ml.layout import RAW_DATA, SCHEMA_FILE, TEST_DATA, TRAIN_DATA, VALIDATION_REPORT, write_json
from ml.params import DataParams, PreprocessParams, load_params
from ml.schema import DatasetSchema, write_schema
from ml.validation import Kind, ValidatedData, read_raw, validate


@dataclass(frozen=True)
class Prepared:
    train: pd.DataFrame
    test: pd.DataFrame
    schema: DatasetSchema
    report: dict[str, Any]


def preprocess(
    raw: pd.DataFrame, *, source: str, data: DataParams, params: PreprocessParams
) -> Prepared:
    """Validated, typed, stratified and seeded split of ``raw``."""
    valid = validate(raw, source=source, data=data, params=params)
    train, test = _split(valid, source, data.target, params)
    features = [
        _feature_spec(name, kind, train[name], source) for name, kind in valid.kinds.items()
    ]
    classes = sorted(valid.labels.unique().tolist())
    schema = DatasetSchema(target=data.target, classes=classes, features=features)
    report = {**valid.report, "train_rows": len(train), "test_rows": len(test)}
    return Prepared(train=train, test=test, schema=schema, report=report)


def _split(
    valid: ValidatedData, source: str, target: str, params: PreprocessParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = valid.features.copy()
    table[target] = valid.labels
    try:
        train, test = train_test_split(
            table,
            test_size=params.test_size,
            random_state=params.seed,
            stratify=valid.labels,
        )
    except ValueError as exc:
        raise DataError(
            f"{source}: cannot split {len(table)} rows with params preprocess.test_size="
            f"{params.test_size}: {exc}"
        ) from None
    return train, test


def _feature_spec(name: str, kind: Kind, train_column: pd.Series[Any], source: str) -> FeatureSpec:
    categories = None
    if kind == "category":
        categories = sorted(str(v) for v in train_column.dropna().unique())
        if not categories:
            raise DataError(f"{source}: column {name!r} has no value in the training split")
    try:
        # Every feature is nullable: the pipeline imputes each column, so a missing value at
        # serving time is handled just as it was in training.
        return FeatureSpec(name=name, dtype=kind, categories=categories, nullable=True)
    except ValidationError as exc:
        raise DataError(f"{source}: column {name!r}: {exc.errors()[0]['msg']}") from None


def _summary(prepared: Prepared) -> str:
    report = prepared.report
    missing = {
        name: column["missing"] for name, column in report["features"].items() if column["missing"]
    }
    return (
        f"preprocess: {report['rows']} rows ({report['rows_without_target']} without target), "
        f"{len(prepared.schema.features)} features, classes {report['class_counts']}, "
        f"train {report['train_rows']} / test {report['test_rows']}, missing values {missing}"
    )


def _run() -> None:
    params = load_params()
    raw = read_raw(RAW_DATA, params.data.source)
    prepared = preprocess(
        raw, source=params.data.source, data=params.data, params=params.preprocess
    )
    TRAIN_DATA.parent.mkdir(parents=True, exist_ok=True)
    prepared.train.to_csv(TRAIN_DATA, index=False, lineterminator="\n")
    prepared.test.to_csv(TEST_DATA, index=False, lineterminator="\n")
    write_schema(prepared.schema, SCHEMA_FILE)
    write_json(VALIDATION_REPORT, prepared.report)
    print(_summary(prepared))


def main() -> None:
    run_stage("preprocess", _run)


if __name__ == "__main__":
    main()
