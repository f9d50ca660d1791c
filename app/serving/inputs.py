"""Validates decoded requests (rows, or columns of values) against one model's schema.

The codecs (``app/codecs/``) turn a wire format into rows or columns of plain values; this
module checks them once per request, column by column, so the model sees exactly the dtypes
it was trained on, and every error names the row (or CSV line) and the feature.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import eq, itemgetter
from typing import Any

import numpy as np
import pandas as pd

from app.errors import InvalidInput, PayloadTooLarge
from app.registry.meta import MISSING_CATEGORY, FeatureSpec

# Beyond this magnitude a float64 loses integer precision and scaling becomes meaningless;
# such values are almost always unit or encoding mistakes.
MAX_ABS_NUMBER = 1e15


@dataclass(frozen=True)
class InputLimits:
    max_rows: int
    max_string_length: int


class Batch:
    """Validated rows as one array per feature, plus what monitoring wants to know.

    ``matrix`` holds all features as one (rows x features) float64 array, in schema order,
    when the schema is all-numeric: array-fitted models take it as it is, and the per-feature
    columns are sliced from it only if someone asks for them.
    """

    def __init__(
        self,
        columns: dict[str, np.ndarray[Any, Any]] | None,
        n_rows: int,
        unknown_categories: dict[str, int] | None = None,
        matrix: np.ndarray[Any, Any] | None = None,
        names: Sequence[str] = (),
    ) -> None:
        if columns is None and (matrix is None or not names):
            raise ValueError("a batch needs its columns, or a matrix and its column names")
        self._columns = columns
        self.n_rows = n_rows
        self.unknown_categories = unknown_categories or {}
        self.matrix = matrix
        self.names = list(names)

    @property
    def columns(self) -> dict[str, np.ndarray[Any, Any]]:
        if self._columns is None:
            assert self.matrix is not None
            self._columns = {name: self.matrix[:, i] for i, name in enumerate(self.names)}
        return self._columns

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns, copy=False)

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """One batch of all rows, in order: what micro-batching sends to the model."""
        if len(batches) == 1:
            return batches[0]
        n_rows = sum(b.n_rows for b in batches)
        matrices = [b.matrix for b in batches if b.matrix is not None]
        if len(matrices) == len(batches) and batches[0].names:
            return Batch(None, n_rows, matrix=np.concatenate(matrices), names=batches[0].names)
        names = list(batches[0].columns)
        return Batch(
            columns={n: np.concatenate([b.columns[n] for b in batches]) for n in names},
            n_rows=n_rows,
        )


def batch_from_frame(frame: pd.DataFrame, features: Sequence[FeatureSpec]) -> Batch:
    """A batch straight from a training-style frame (NaN or "" for missing values)."""
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for feature in features:
        column = frame[feature.name]
        if feature.dtype == "category":
            filled = column.astype(object).where(column.notna(), MISSING_CATEGORY)
            columns[feature.name] = filled.astype(str).to_numpy(dtype=object)
        else:
            columns[feature.name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    return Batch(columns=columns, n_rows=len(frame))


# ``type(v) in``, not isinstance: a bool is an int and must not pass as a number.
_NUMBERS = frozenset({int, float})
# Up to this many values, a pass over their types costs less than the numpy calls that
# would spare it (about 20 ns a value against a few microseconds).
FEW_VALUES = 256


def _plain_numbers(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """The values as float64 when every one is a finite, sane int or float, else None.

    ``struct.pack`` converts in one C loop (about a third of ``array.array``'s time on 3,000
    floats) and refuses what a JSON or CSV decoder makes that is not a number: strings, None,
    containers and ints too large for a float. A bool gets through it (bool is an int
    subclass) as 0.0 or 1.0, and must not. Each value's type is looked at when there are few
    values, where that pass costs less than the numpy calls that spare it, or when a 0 or 1
    occurs.
    """
    try:
        packed = struct.pack(f"{len(values)}d", *values)
    except (struct.error, TypeError, OverflowError):
        return None
    numbers = np.frombuffer(packed, dtype=np.float64)
    look = len(values) <= FEW_VALUES or bool(((numbers == 0.0) | (numbers == 1.0)).any())
    if look and not set(map(type, values)) <= _NUMBERS:
        return None
    return numbers if _sane(numbers) else None


def _sane(numbers: np.ndarray[Any, Any]) -> bool:
    """Whether every number is finite and at most MAX_ABS_NUMBER in size. NaN makes max and
    min NaN, which compares False; two reductions, and no temporary array as abs() makes."""
    return numbers.size == 0 or (
        bool(numbers.max() <= MAX_ABS_NUMBER) and bool(numbers.min() >= -MAX_ABS_NUMBER)
    )


def _values_getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values in the order of ``names``, as a tuple: one C call per row."""
    if len(names) > 1:
        return itemgetter(*names)
    return lambda row: tuple(row[name] for name in names)  # itemgetter of one: a bare value


# Where a value sits, for error messages: a row of the JSON body, a line of the CSV file, a
# row of a tensor.
Locate = Callable[[int], str]


def _json_row(index: int) -> str:
    return f"instances[{index}]"


def describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class InputSchema:
    """The input contract of one model: feature names, dtypes, categories, nullability."""

    def __init__(self, features: Sequence[FeatureSpec], limits: InputLimits) -> None:
        self.features = list(features)
        self.names = [feature.name for feature in self.features]
        self._name_set = frozenset(self.names)
        self._numeric_names = [f.name for f in self.features if f.dtype != "category"]
        self.categorical = [f.name for f in self.features if f.dtype == "category"]
        self._numeric_index = {name: i for i, name in enumerate(self._numeric_names)}
        self._int_positions = [
            i
            for i, f in enumerate(f for f in self.features if f.dtype != "category")
            if f.dtype == "int"
        ]
        self._all_numeric = not self.categorical
        self._numeric_values = _values_getter(self._numeric_names)
        self._known = {
            f.name: frozenset(f.categories or ()) for f in self.features if f.dtype == "category"
        }
        self.limits = limits

    @classmethod
    def unlimited(cls, features: Sequence[FeatureSpec]) -> InputSchema:
        """The schema without request limits, for rows we wrote ourselves (reference rows)."""
        return cls(features, InputLimits(max_rows=sys.maxsize, max_string_length=sys.maxsize))

    # -- rows (JSON instances, reference rows) ---------------------------------------
    def rows_to_batch(self, rows: Sequence[Any]) -> Batch:
        self._check_count(len(rows))
        if self._all_numeric:
            matrix = self._plain_matrix(rows)
            if matrix is not None:
                return Batch(None, len(rows), matrix=matrix, names=self.names)
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInput(
                    f"{_json_row(index)} must be an object mapping feature names to values",
                    reason="malformed_body",
                )
            if row.keys() != self._name_set:
                self._explain_keys(row.keys(), _json_row(index))
        matrix = self._numeric_matrix(rows)
        if matrix is not None and self._all_numeric:
            return Batch(None, len(rows), matrix=matrix, names=self.names)
        columns: dict[str, np.ndarray[Any, Any]] = {}
        unknown: dict[str, int] = {}
        for feature in self.features:
            if matrix is not None and feature.name in self._numeric_index:
                columns[feature.name] = matrix[:, self._numeric_index[feature.name]]
                continue
            values = [row[feature.name] for row in rows]
            columns[feature.name] = self._column(feature, values, _json_row, unknown)
        return Batch(columns=columns, n_rows=len(rows), unknown_categories=unknown)

    def _plain_matrix(self, rows: Sequence[Any]) -> np.ndarray[Any, Any] | None:
        """The rows as one matrix when every row is an object with exactly the schema's keys
        and every value a plain, sane number; else None, and the checking path names what is
        wrong.

        The usual request, checked with C-level passes: as many keys as features in every
        row, then the values read in order when every row has the schema's key order, else
        taken by name (one ``itemgetter`` per row, whatever order the client wrote the keys
        in), which also finds each feature.
        """
        if set(map(type, rows)) != {dict}:  # rows_to_batch has refused an empty list
            return None
        if set(map(len, rows)) != {len(self.names)}:
            return None
        # All-numeric: the numeric features are all the features.
        values = dict.values if self._keys_in_schema_order(rows) else self._numeric_values
        try:
            return self._matrix_of(rows, values)
        except KeyError:  # by name, a row lacks a feature
            return None

    def _keys_in_schema_order(self, rows: Sequence[dict[str, Any]]) -> bool:
        """Whether every row's keys are the schema's names in the schema's order, so that a
        row's values can be read in order instead of looked up one name at a time.

        The usual request: a client writes every row alike. Each row is compared with the
        first, whose key objects the JSON parser hands out again for the same names, so most
        comparisons find the very same object; the first is compared with the schema once.
        """
        first = list(rows[0])
        return first == self.names and all(map(eq, map(list, rows), repeat(first)))

    def _numeric_matrix(self, rows: Sequence[dict[str, Any]]) -> np.ndarray[Any, Any] | None:
        """All numeric values of all rows in one array, when they are all plain and sane.

        One numpy call for the whole request instead of several per feature; anything
        unusual (a null, a string, a bool, a huge number) returns None and the per-column
        path finds and names it.
        """
        if not self._numeric_names:
            return None
        return self._matrix_of(rows, self._numeric_values)

    def _matrix_of(
        self, rows: Sequence[Mapping[str, Any]], values: Callable[[Any], Iterable[Any]]
    ) -> np.ndarray[Any, Any] | None:
        """The rows' numeric features as a (rows x numeric features) matrix, when every value
        is plain and sane and the int features are whole; else None. ``values`` gives a row's
        numeric values in schema order (a KeyError when it looks up a missing one)."""
        numbers = _plain_numbers(list(chain.from_iterable(map(values, rows))))
        if numbers is None:
            return None
        matrix = numbers.reshape(len(rows), len(self._numeric_names))
        return matrix if self._ints_whole(matrix) else None

    def _ints_whole(self, matrix: np.ndarray[Any, Any]) -> bool:
        """Whether the int features' columns of a numeric matrix hold whole numbers only."""
        positions = self._int_positions
        return not positions or bool(np.all(np.mod(matrix[:, positions], 1) == 0))

    # -- columns (CSV, OIP tensors) ----------------------------------------------------
    def columns_to_batch(
        self,
        columns: Mapping[str, Sequence[Any]],
        n_rows: int,
        where: Locate,
        source: str = "input",
    ) -> Batch:
        """A batch from one list of values per feature (extra columns are the codec's
        business: it names and drops them). ``where`` locates a row for error messages,
        ``source`` names the columns' origin (``CSV header``, ``inputs``)."""
        self._explain_keys(columns.keys(), source)
        self._check_count(n_rows)
        checked: dict[str, np.ndarray[Any, Any]] = {}
        unknown: dict[str, int] = {}
        for feature in self.features:
            values = list(columns[feature.name])
            if len(values) != n_rows:
                raise InvalidInput(
                    f"column {feature.name!r} has {len(values)} values, expected {n_rows}",
                    reason="shape_mismatch",
                )
            checked[feature.name] = self._column(feature, values, where, unknown)
        return Batch(columns=checked, n_rows=n_rows, unknown_categories=unknown)

    def matrix_to_batch(self, matrix: np.ndarray[Any, Any], where: Locate) -> Batch:
        """A batch from a (rows x features) numeric array in schema order (all-numeric
        schemas only); every value is checked as a JSON number would be."""
        if not self._all_numeric:
            raise InvalidInput(
                "this model has categorical features: send one input per feature",
                reason="wrong_type",
            )
        if matrix.ndim != 2 or matrix.shape[1] != len(self.features):
            raise InvalidInput(
                f"expected a [rows, {len(self.features)}] tensor (features in the order "
                f"{', '.join(self.names)}), got shape {list(matrix.shape)}",
                reason="shape_mismatch",
            )
        self._check_count(int(matrix.shape[0]))
        values = np.asarray(matrix, dtype=np.float64)
        if _sane(values) and self._ints_whole(values):
            return Batch(None, int(values.shape[0]), matrix=values, names=self.names)
        columns = {name: values[:, i].tolist() for i, name in enumerate(self.names)}
        return self.columns_to_batch(columns, int(values.shape[0]), where)

    # -- shared ----------------------------------------------------------------------
    def _check_count(self, n_rows: int) -> None:
        if n_rows == 0:
            raise InvalidInput("no rows: send at least one instance", reason="empty")
        if n_rows > self.limits.max_rows:
            raise PayloadTooLarge(
                f"{n_rows} rows is more than the limit of {self.limits.max_rows} (ML_API_MAX_ROWS)",
                reason="too_many_rows",
            )

    def _explain_keys(self, keys: Iterable[str], where: str) -> None:
        keys = set(keys)
        missing = [name for name in self.names if name not in keys]
        unknown = sorted(keys - self._name_set)
        if missing:
            raise InvalidInput(
                f"{where}: missing feature(s) {', '.join(map(repr, missing))}",
                reason="missing_feature",
            )
        if unknown:
            # Names come from the client: shown shortened, and only the first few.
            shown = ", ".join(describe(name) for name in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InvalidInput(
                f"{where}: unknown feature(s) {shown}{more}; expected {', '.join(self.names)}",
                reason="unknown_feature",
            )

    def check_column(
        self,
        feature: FeatureSpec,
        values: list[Any],
        where: Locate,
        unknown: dict[str, int],
    ) -> np.ndarray[Any, Any]:
        """One feature's values (plain JSON-like values: None, numbers, strings) checked and
        converted, or InvalidInput naming the first bad row; for readers that hold a column
        of values rather than a request (batch scoring)."""
        return self._column(feature, values, where, unknown)

    def _column(
        self,
        feature: FeatureSpec,
        values: list[Any],
        where: Locate,
        unknown: dict[str, int],
    ) -> np.ndarray[Any, Any]:
        if feature.dtype == "category":
            return self._category_column(feature, values, where, unknown)
        return self._numeric_column(feature, values, where)

    def _null(self, feature: FeatureSpec, where: Locate, index: int) -> None:
        if not feature.nullable:
            raise InvalidInput(
                f"{where(index)}: feature {feature.name!r} may not be null",
                reason="null_value",
            )

    def _numeric_column(
        self, feature: FeatureSpec, values: list[Any], where: Locate
    ) -> np.ndarray[Any, Any]:
        fast = _plain_numbers(values)
        if fast is not None and (feature.dtype == "float" or np.all(np.mod(fast, 1) == 0)):
            return fast
        # Something is off (or null): the per-value walk finds it and names the row.
        return self._numeric_column_checked(feature, values, where)

    def _numeric_column_checked(
        self, feature: FeatureSpec, values: list[Any], where: Locate
    ) -> np.ndarray[Any, Any]:
        out = np.empty(len(values), dtype=np.float64)
        for index, value in enumerate(values):
            if value is None:
                self._null(feature, where, index)
                out[index] = math.nan
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(
                    f"{where(index)}: feature {feature.name!r} expects a number, "
                    f"got {describe(value)}",
                    reason="wrong_type",
                )
            number = float(value) if abs(value) <= MAX_ABS_NUMBER else math.inf
            if not math.isfinite(number):
                raise InvalidInput(
                    f"{where(index)}: feature {feature.name!r} is out of range "
                    f"(|x| must be finite and at most {MAX_ABS_NUMBER:g})",
                    reason="out_of_range",
                )
            if feature.dtype == "int" and not number.is_integer():
                raise InvalidInput(
                    f"{where(index)}: feature {feature.name!r} expects an integer, "
                    f"got {describe(value)}",
                    reason="wrong_type",
                )
            out[index] = number
        return out

    def _category_column(
        self,
        feature: FeatureSpec,
        values: list[Any],
        where: Locate,
        unknown: dict[str, int],
    ) -> np.ndarray[Any, Any]:
        out = np.empty(len(values), dtype=object)
        known = self._known[feature.name]
        limit = self.limits.max_string_length
        for index, value in enumerate(values):
            if value is None:
                self._null(feature, where, index)
                out[index] = MISSING_CATEGORY
                continue
            if not isinstance(value, str):
                raise InvalidInput(
                    f"{where(index)}: feature {feature.name!r} expects a string, "
                    f"got {describe(value)}",
                    reason="wrong_type",
                )
            if len(value) > limit:
                raise InvalidInput(
                    f"{where(index)}: feature {feature.name!r} is longer than {limit} characters",
                    reason="too_long",
                )
            if value not in known:
                # Served anyway (the encoder ignores unknown categories) but counted: an
                # unseen category is an early sign of drift.
                unknown[feature.name] = unknown.get(feature.name, 0) + 1
            out[index] = value
        return out
