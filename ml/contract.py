"""The data contract: what an extract must look like before the pipeline trains on it.

A fresh extract can break in ways that still train: a renamed column, a unit change (grams
now kilograms), codes instead of labels, a category the service has never seen. A model
trained on it would then be served rows unlike its training data (training-serving skew). The
load stage checks every extract against a reviewed contract and stops the pipeline with one
message naming every problem instead.

A contract is a YAML file committed in ``ml/datasets/`` (params ``data.contract`` names it; the
folder is a dependency of the load stage, so editing a contract reruns the pipeline)::

    columns:
      bill_length_mm: {type: float, min: 25, max: 75}
      island: {type: category, categories: [Biscoe, Dream, Torgersen]}
      year: {type: int, min: 2000}

Types are those of the model's input schema: ``float`` (any number), ``int`` (whole numbers),
``category`` (text; ``categories`` is the closed set of values). ``min``/``max`` bound numbers
(inclusive), ``nullable: false`` forbids missing values. Every column of the extract must be
in the contract and every contract column in the extract. ``python -m ml.contract SOURCE``
prints a draft contract from a dataset, to review and commit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pandas.api import types as ptypes
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ml.errors import DataError, ParamsError, run_stage

# Offending values quoted per problem: enough to find them, short enough to read.
SHOWN = 3

ContractType = Literal["float", "int", "category"]
# Where a row sits in the extract, for messages: "line 12" (CSV) or "row 11" (Parquet).
Locate = Callable[[Any], str]


class ColumnContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ContractType
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = Field(default=None, min_length=1)
    nullable: bool = True

    @model_validator(mode="after")
    def _fits_the_type(self) -> ColumnContract:
        if self.type == "category":
            if self.categories is None:
                raise ValueError("a category column needs its 'categories'")
            if self.min is not None or self.max is not None:
                raise ValueError("'min'/'max' are for numeric columns")
        elif self.categories is not None:
            raise ValueError("'categories' are for category columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' {self.min} is above 'max' {self.max}")
        return self


class DataContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, ColumnContract] = Field(min_length=1)


def read_contract(path: Path) -> DataContract:
    """The contract in ``path``; ParamsError naming the file and key when it is unusable."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"params data.contract: {path} not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return DataContract.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'contract'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ParamsError(f"{path}: not a valid data contract: {problems}") from None


def violations(frame: pd.DataFrame, contract: DataContract, locate: Locate) -> list[str]:
    """Every way ``frame`` breaks ``contract``, one phrase each; empty when it complies."""
    present = [str(c) for c in frame.columns]
    problems = [f"missing column {name!r}" for name in contract.columns if name not in present]
    problems += [
        f"unexpected column {name!r} (not in the contract)"
        for name in present
        if name not in contract.columns
    ]
    if frame.empty:
        problems.append("no data rows")
        return problems
    for name, column_contract in contract.columns.items():
        if name in present:
            column = frame[name]
            problems += [
                f"column {name!r}: {p}" for p in _column_problems(column, column_contract, locate)
            ]
    return problems


def enforce(
    frame: pd.DataFrame, contract: DataContract, *, source: str, contract_name: str, locate: Locate
) -> None:
    """Raise DataError naming every problem when ``frame`` breaks ``contract``."""
    problems = violations(frame, contract, locate)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise DataError(
            f"{source} breaks the data contract {contract_name} ({count}; nothing was "
            f"trained): {'; '.join(problems)}"
        )


def _column_problems(column: pd.Series[Any], contract: ColumnContract, locate: Locate) -> list[str]:
    problems: list[str] = []
    missing = column.isna()
    if not contract.nullable and missing.any():
        problems.append(
            f"missing values: {int(missing.sum())} row(s) have none but the contract says "
            f"nullable: false ({_where(column[missing].index, locate)})"
        )
    values = column[~missing]
    if contract.type == "category":
        problems += _category_problems(values, contract, locate)
    else:
        problems += _numeric_problems(values, contract, locate)
    return problems


def _category_problems(
    values: pd.Series[Any], contract: ColumnContract, locate: Locate
) -> list[str]:
    allowed = contract.categories or []
    numbers_allowed = all(_is_number(c) for c in allowed)
    if not values.empty and _is_numeric(values) and not numbers_allowed:
        return [f"wrong type: expected category (text), found numbers ({_quote(values, locate)})"]
    text = values.map(str)
    new = text[~text.isin(allowed)]
    if new.empty:
        return []
    counts = new.value_counts()
    shown = ", ".join(
        f"{value!r} ({count} row{'s' if count > 1 else ''}, first at "
        f"{locate(new[new == value].index[0])})"
        for value, count in counts.head(SHOWN).items()
    )
    more = f" and {len(counts) - SHOWN} more" if len(counts) > SHOWN else ""
    return [f"new category {shown}{more} not in [{', '.join(map(repr, allowed))}]"]


def _numeric_problems(
    values: pd.Series[Any], contract: ColumnContract, locate: Locate
) -> list[str]:
    problems: list[str] = []
    if ptypes.is_bool_dtype(values):
        return [f"wrong type: expected {contract.type}, found booleans ({_quote(values, locate)})"]
    numbers = pd.to_numeric(values.map(_strip), errors="coerce")
    text = values[numbers.isna()]
    if not text.empty:
        problems.append(
            f"wrong type: expected {contract.type}, found text ({_quote(text, locate)})"
        )
    numbers = numbers.dropna().astype(np.float64)
    if contract.type == "int":
        fractional = numbers[np.isfinite(numbers) & (numbers % 1 != 0)]
        if not fractional.empty:
            problems.append(
                f"wrong type: expected int, found non-whole numbers ({_quote(fractional, locate)})"
            )
    low = -np.inf if contract.min is None else contract.min
    high = np.inf if contract.max is None else contract.max
    outside = numbers[(numbers < low) | (numbers > high) | ~np.isfinite(numbers)]
    if not outside.empty:
        bounds = f"[{_bound(contract.min)}, {_bound(contract.max)}]"
        problems.append(
            f"out of range: {len(outside)} value(s) outside {bounds} ({_quote(outside, locate)})"
        )
    return problems


def _is_numeric(values: pd.Series[Any]) -> bool:
    return ptypes.is_numeric_dtype(values) and not ptypes.is_bool_dtype(values)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _bound(value: float | None) -> str:
    return "…" if value is None else f"{value:g}"


def _quote(values: pd.Series[Any], locate: Locate) -> str:
    shown = ", ".join(f"{locate(index)}: {value!r}" for index, value in values.head(SHOWN).items())
    more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
    return shown + more


def _where(index: pd.Index[Any], locate: Locate) -> str:
    shown = ", ".join(locate(i) for i in index[:SHOWN])
    more = f" and {len(index) - SHOWN} more" if len(index) > SHOWN else ""
    return shown + more


# -- a draft contract from a dataset -------------------------------------------------------


def draft(frame: pd.DataFrame) -> dict[str, Any]:
    """A contract that ``frame`` meets: observed types, ranges and category sets. A starting
    point to review (widen ranges to what is plausible), not a contract to commit blindly."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name].dropna()
        entry: dict[str, Any]
        if _is_numeric(values) and not values.empty:
            whole = ptypes.is_integer_dtype(values)
            entry = {"type": "int" if whole else "float"}
            entry["min"] = _plain(values.min())
            entry["max"] = _plain(values.max())
        else:
            entry = {"type": "category", "categories": sorted({str(v) for v in values})}
        columns[str(name)] = entry
    return {"columns": columns}


def _plain(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def _draft_main() -> None:
    from ml.sources import fetch

    if len(sys.argv) != 2:
        raise ParamsError("usage: python -m ml.contract SOURCE  (a path or s3:// URL)")
    frame = fetch(sys.argv[1]).frame
    print("# Draft data contract: review the ranges and category sets before committing it.")
    print(yaml.safe_dump(draft(frame), sort_keys=False, default_flow_style=None), end="")


def main() -> None:
    run_stage("contract", _draft_main)


if __name__ == "__main__":
    main()
