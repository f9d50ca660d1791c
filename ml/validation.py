"""Checks on the raw data before anything is trained: every error names file, column and line.

Feature types are inferred: numeric columns become ``float`` (``int`` when pandas reads
whole numbers without gaps), text and booleans become ``category``. A text column that is
almost all numbers is a numeric column with a stray value, reported as an error rather
than silently turned into categories.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ml.errors import DataError
from ml.params import DataParams, PreprocessParams

Kind = Literal["float", "int", "category"]
# Offending values quoted in one message: enough to find them, short enough for one line.
SHOWN_VALUES = 3


@dataclass(frozen=True)
class ValidatedData:
    """Rows with a target: typed feature columns (float64, or object str; NaN for missing,
    as the prepared CSV files keep them), target as str labels."""

    features: pd.DataFrame
    labels: pd.Series[str]
    kinds: dict[str, Kind]
    report: dict[str, Any]


def line_of(index: Any) -> int:
    """CSV line of a data row: rows are read with blank lines kept, below a one-line header."""
    return int(index) + 2


def read_raw(path: Path, source: str) -> pd.DataFrame:
    """Parse the raw CSV; ``source`` is how error messages name it (the user's file)."""
    return parse_csv(path.read_bytes(), source)


def parse_csv(data: bytes, source: str) -> pd.DataFrame:
    """A CSV table with blank lines kept as empty rows, so row ``i`` is on line ``i + 2``."""
    if not data.strip():
        raise DataError(f"{source}: the file is empty: expected a CSV header and rows")
    _check_header(data, source)
    try:
        return pd.read_csv(io.BytesIO(data), skip_blank_lines=False, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{source}: not a readable CSV file: {reason}") from None


def _check_header(data: bytes, source: str) -> None:
    first_line = data.decode("utf-8", errors="replace").splitlines()[0]
    header = next(csv.reader([first_line]))
    names = [name.strip() for name in header]
    if any(not name for name in names):
        raise DataError(f"{source}: the header has an empty column name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{source}: the header repeats column(s) {', '.join(map(repr, repeated))}")


def validate(
    raw: pd.DataFrame, *, source: str, data: DataParams, params: PreprocessParams
) -> ValidatedData:
    """Check the raw table against the params and infer feature types; raise DataError."""
    _check_columns(raw, source, data)
    has_target = raw[data.target].notna()
    rows = raw[has_target]
    if rows.empty:
        raise DataError(f"{source}: no row has a value in the target column {data.target!r}")
    labels = _labels(rows[data.target])
    _check_classes(labels, source, data.target)
    names = [c for c in raw.columns if c != data.target and c not in data.drop_columns]
    if not names:
        raise DataError(f"{source}: no feature column left besides target and data.drop_columns")
    kinds = {name: _infer_kind(rows[name], name, source, params) for name in names}
    features = pd.DataFrame({name: _typed(rows[name], kinds[name]) for name in names})
    report = _report(raw, features, labels, kinds, data)
    return ValidatedData(features=features, labels=labels, kinds=kinds, report=report)


def _check_columns(raw: pd.DataFrame, source: str, data: DataParams) -> None:
    columns = [str(c) for c in raw.columns]
    if data.target not in columns:
        raise DataError(
            f"{source}: target column {data.target!r} (params data.target) not found; "
            f"columns are {', '.join(columns)}"
        )
    if data.target in data.drop_columns:
        raise DataError(f"params data.drop_columns: drops the target column {data.target!r}")
    unknown = [c for c in data.drop_columns if c not in columns]
    if unknown:
        raise DataError(
            f"params data.drop_columns: column(s) {', '.join(map(repr, unknown))} not in {source}"
        )
    if len(raw) == 0:
        raise DataError(f"{source}: no data rows below the header")


def _labels(target: pd.Series[Any]) -> pd.Series[str]:
    # Whole-number targets read as float when some are missing: label them "1", not "1.0".
    if ptypes.is_float_dtype(target) and bool((target % 1 == 0).all()):
        target = target.astype(np.int64)
    return target.astype(str)


def _check_classes(labels: pd.Series[str], source: str, target: str) -> None:
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"{source}: target column {target!r} has a single class {counts.index[0]!r}; "
            "a classifier needs at least two"
        )
    rare = [str(label) for label, count in counts.items() if count < 2]
    if rare:
        raise DataError(
            f"{source}: class(es) {', '.join(map(repr, rare))} of target {target!r} have a "
            "single row; every class needs at least two for a stratified split"
        )


def _infer_kind(column: pd.Series[Any], name: str, source: str, params: PreprocessParams) -> Kind:
    present = column.dropna()
    if present.empty:
        raise DataError(
            f"{source}: column {name!r} has no values; list it in params data.drop_columns"
        )
    if ptypes.is_bool_dtype(column):
        return "category"
    if ptypes.is_numeric_dtype(column):
        _check_finite(column, name, source)
        return "int" if ptypes.is_integer_dtype(column) else "float"
    numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    numeric_share = float(numbers.notna().mean())
    if numeric_share >= params.numeric_share:
        _raise_stray_values(present[numbers.isna()], name, source, numeric_share)
        return "float"
    categories = present.astype(str).nunique()
    if categories > params.max_categories:
        raise DataError(
            f"{source}: column {name!r} has {categories} distinct values, more than "
            f"params preprocess.max_categories={params.max_categories}; an identifier or free "
            "text is no feature: list it in params data.drop_columns"
        )
    return "category"


def _check_finite(column: pd.Series[Any], name: str, source: str) -> None:
    values = column.astype(np.float64)
    infinite = values[np.isinf(values)]
    if not infinite.empty:
        index = infinite.index[0]
        raise DataError(
            f"{source}: column {name!r}, line {line_of(index)}: {float(infinite.iloc[0])} is not a "
            "finite number"
        )


def _raise_stray_values(stray: pd.Series[Any], name: str, source: str, share: float) -> None:
    if stray.empty:
        return  # every value parses as a number: a numeric column pandas kept as text
    shown = ", ".join(
        f"line {line_of(index)}: {value!r}" for index, value in stray.head(SHOWN_VALUES).items()
    )
    more = f" and {len(stray) - SHOWN_VALUES} more" if len(stray) > SHOWN_VALUES else ""
    raise DataError(
        f"{source}: column {name!r} is numeric ({share:.0%} of values are numbers) but holds "
        f"non-numeric value(s) ({shown}{more}); fix or blank them"
    )


def _typed(column: pd.Series[Any], kind: Kind) -> pd.Series[Any]:
    if kind == "category":
        # object, not pandas' str dtype: the service hands the model object arrays.
        return column.where(column.notna(), np.nan).map(_text).astype(object)
    return pd.to_numeric(column.astype(object).map(_strip)).astype(np.float64)


def _text(value: object) -> object:
    return value if isinstance(value, float) and np.isnan(value) else str(value)


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _report(
    raw: pd.DataFrame,
    features: pd.DataFrame,
    labels: pd.Series[str],
    kinds: dict[str, Kind],
    data: DataParams,
) -> dict[str, Any]:
    """The missing-value report: what was dropped, and what is missing per feature."""
    return {
        "rows": len(raw),
        "rows_without_target": int(len(raw) - len(labels)),
        "target": data.target,
        "class_counts": {str(k): int(v) for k, v in labels.value_counts().sort_index().items()},
        "dropped_columns": list(data.drop_columns),
        "features": {
            name: {
                "dtype": kinds[name],
                "missing": int(features[name].isna().sum()),
                "missing_share": round(float(features[name].isna().mean()), 4),
            }
            for name in features.columns
        },
    }
