"""Checks a chunk's feature columns against the model's schema, whole columns at a time.

Every column is first checked vectorised (Arrow compute for CSV text and Parquet columns, the
schema's own column check for JSON values). Only the rows that fail there are checked again
one by one, by the exact rules of ``/predict`` (:func:`app.codecs.cells.parse_cell` for text,
then :meth:`InputSchema.check_column`), which decide and give the message naming the row and
the feature. So a clean chunk costs a few array operations, and batch and ``/predict`` accept
exactly the same values.

What each input kind means:

* text (CSV cells): trimmed; ``""``/``NA``/``NaN``/``null`` are missing; numbers strictly.
* typed (Parquet): numbers from numeric columns (null or NaN is missing), categories from
  string columns (null is missing; the text is taken as it is, like a JSON string).
* json (JSON Lines): values as ``/predict`` takes them in a JSON row; a missing key is an
  error, like a missing feature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.batch.reading import Chunk, holds_numbers, holds_text
from app.codecs.cells import MISSING_CELLS, NUMBER_PATTERN, WHITESPACE, parse_cell
from app.errors import BatchInputError, InvalidInput
from app.registry.meta import MISSING_CATEGORY, FeatureSpec
from app.serving.inputs import MAX_ABS_NUMBER, Batch, InputSchema

_NUMBER_REGEX = f"^(?:{NUMBER_PATTERN})$"
_MISSING_VALUES = pa.array(sorted(MISSING_CELLS))
MAX_EXAMPLES = 20


@dataclass(frozen=True)
class RowError:
    row: int  # input row, 1-based (as in the message)
    reason: str
    message: str


@dataclass
class ValidatedChunk:
    """The rows of a chunk that passed (as one batch, in order) and those that did not."""

    valid: np.ndarray[Any, Any]  # bool per row of the chunk
    batch: Batch | None  # the valid rows; None when there is none
    errors: list[RowError] = field(default_factory=list)  # in row order
    unknown_categories: dict[str, int] = field(default_factory=dict)


@dataclass
class _Column:
    values: np.ndarray[Any, Any]  # float64 (NaN missing) or object (str, "" missing)
    ok: np.ndarray[Any, Any]  # bool: passed the vectorised check
    unseen: np.ndarray[Any, Any] | None = None  # bool: a category not seen in training


def _row(start: int, offset: int) -> str:
    return f"row {start + offset + 1}"


def _numpy_bool(array: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


class ChunkValidator:
    """One model's input rules applied to chunks of one input."""

    def __init__(self, schema: InputSchema) -> None:
        self.schema = schema
        self._features = list(schema.features)
        self._limit = schema.limits.max_string_length
        self._known = {
            f.name: pa.array(sorted(f.categories or ()), pa.string())
            for f in self._features
            if f.dtype == "category"
        }

    # -- before the first chunk ------------------------------------------------------
    def check_columns(
        self, columns: Sequence[str], types: Mapping[str, pa.DataType], url: str
    ) -> None:
        """Raise before any scoring when the input lacks a feature, or declares a type that
        cannot hold it (Parquet)."""
        present = set(columns)
        missing = [f.name for f in self._features if f.name not in present]
        if missing:
            raise BatchInputError(
                f"input {url!r} has no column for feature(s) {', '.join(map(repr, missing))}; "
                f"the model takes {', '.join(self.schema.names)}"
            )
        for feature in self._features:
            kind = types.get(feature.name)
            if kind is None:
                continue
            fits = holds_text(kind) if feature.dtype == "category" else holds_numbers(kind)
            if not fits:
                expected = "a string column" if feature.dtype == "category" else "a number column"
                raise BatchInputError(
                    f"input {url!r}: column {feature.name!r} has type {kind}; "
                    f"feature {feature.name!r} needs {expected}"
                )

    # -- one chunk -----------------------------------------------------------------
    def validate(self, chunk: Chunk) -> ValidatedChunk:
        n = chunk.n_rows
        columns = {f.name: self._vector_check(f, chunk) for f in self._features}
        ok = np.ones(n, dtype=bool)
        for column in columns.values():
            ok &= column.ok
        for offset in chunk.broken:
            ok[offset] = False
        errors: list[RowError] = []
        absent = {name: set(rows) for name, rows in chunk.absent.items()}
        for offset in np.flatnonzero(~ok).tolist():
            error = self._check_row(chunk, offset, columns, absent)
            if error is None:
                ok[offset] = True
            else:
                errors.append(error)
        batch = None
        if ok.any():
            every = bool(ok.all())
            batch = Batch(
                columns={name: c.values if every else c.values[ok] for name, c in columns.items()},
                n_rows=int(ok.sum()),
            )
        unseen = {
            name: int((column.unseen & ok).sum())
            for name, column in columns.items()
            if column.unseen is not None
        }
        return ValidatedChunk(ok, batch, errors, {k: v for k, v in unseen.items() if v})

    def _vector_check(self, feature: FeatureSpec, chunk: Chunk) -> _Column:
        data = chunk.columns[feature.name]
        if chunk.kind == "json":
            return self._json_column(feature, data, chunk)
        if chunk.kind == "text":
            return self._text_column(feature, data)
        return self._typed_column(feature, data)

    def _text_column(self, feature: FeatureSpec, data: pa.Array) -> _Column:
        trimmed = pc.utf8_trim(data, characters=WHITESPACE)
        missing = _numpy_bool(pc.is_in(pc.ascii_lower(trimmed), value_set=_MISSING_VALUES))
        if feature.dtype == "category":
            values = pc.if_else(pa.array(missing), MISSING_CATEGORY, trimmed)
            fits = _numpy_bool(pc.less_equal(pc.utf8_length(trimmed), self._limit))
            ok = fits & (~missing if not feature.nullable else True)
            unseen = ~_numpy_bool(pc.is_in(trimmed, value_set=self._known[feature.name]))
            return _Column(
                values.to_numpy(zero_copy_only=False),
                np.asarray(ok, dtype=bool),
                unseen & ~missing,
            )
        numbers, matched = self._numbers(trimmed, missing)
        ok = matched & self._sane(feature, numbers)
        if feature.nullable:
            ok |= missing
        return _Column(np.where(missing, math.nan, numbers), ok)

    @staticmethod
    def _numbers(
        trimmed: pa.Array, missing: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Each cell's number, and whether it is written as one (missing cells are not; they
        read as 0).

        Arrow's cast parses exactly the cells ``NUMBER_PATTERN`` accepts, plus spellings of
        infinity and NaN, which the range check then refuses (checked on thousands of
        strings; the tests compare cell by cell). So a column that casts whole needs no
        regex; one that does not is matched against the pattern to find its bad cells.
        """
        filled = pc.if_else(pa.array(missing), "0", trimmed)
        try:
            numbers = pc.cast(filled, pa.float64()).to_numpy()
            return numbers, ~missing
        except pa.ArrowInvalid:
            matched = _numpy_bool(pc.match_substring_regex(filled, _NUMBER_REGEX))
            numbers = pc.cast(pc.if_else(pa.array(matched), filled, "0"), pa.float64())
            return numbers.to_numpy(), matched & ~missing

    def _typed_column(self, feature: FeatureSpec, data: pa.Array) -> _Column:
        if pa.types.is_dictionary(data.type):
            data = data.dictionary_decode()
        null = _numpy_bool(data.is_null())
        if feature.dtype == "category":
            filled = pc.fill_null(data.cast(pa.string()), MISSING_CATEGORY)
            fits = _numpy_bool(pc.less_equal(pc.utf8_length(filled), self._limit))
            ok = fits & (~null if not feature.nullable else True)
            unseen = ~_numpy_bool(pc.is_in(filled, value_set=self._known[feature.name]))
            return _Column(
                filled.to_numpy(zero_copy_only=False), np.asarray(ok, dtype=bool), unseen & ~null
            )
        numbers = np.asarray(
            data.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        missing = null | np.isnan(numbers)
        ok = ~missing & self._sane(feature, numbers)
        if feature.nullable:
            ok |= missing
        return _Column(np.where(missing, math.nan, numbers), ok)

    def _json_column(self, feature: FeatureSpec, values: list[Any], chunk: Chunk) -> _Column:
        def where(offset: int) -> str:
            return _row(chunk.start, offset)

        category = feature.dtype == "category"
        try:
            checked = self.schema.check_column(feature, values, where, {})
            ok = np.ones(len(values), dtype=bool)
        except InvalidInput:
            # Something in this column is off: find which rows, one value at a time.
            checked = np.empty(len(values), dtype=object if category else np.float64)
            ok = np.zeros(len(values), dtype=bool)
            for offset, value in enumerate(values):
                try:
                    checked[offset] = self.schema.check_column(feature, [value], where, {})[0]
                    ok[offset] = True
                except InvalidInput:
                    checked[offset] = MISSING_CATEGORY if category else math.nan
        ok[chunk.absent.get(feature.name, [])] = False  # None stood in for the missing key
        unseen = None
        if category:
            known = set(self._known[feature.name].to_pylist())
            unseen = np.fromiter(
                (type(v) is str and v not in known for v in values), dtype=bool, count=len(values)
            )
        return _Column(checked, ok, unseen)

    @staticmethod
    def _sane(feature: FeatureSpec, numbers: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        with np.errstate(invalid="ignore"):
            ok = np.abs(numbers) <= MAX_ABS_NUMBER  # also False for NaN and infinities
            if feature.dtype == "int":
                ok &= np.mod(numbers, 1) == 0
        return np.asarray(ok, dtype=bool)

    # -- the slow path, for rows that failed a vectorised check ------------------------
    def _check_row(
        self,
        chunk: Chunk,
        offset: int,
        columns: dict[str, _Column],
        absent: dict[str, set[int]],
    ) -> RowError | None:
        """The row's first error by the exact ``/predict`` rules; None when it passes (its
        checked values are then stored in ``columns``). ``absent``: per feature, the rows
        whose JSON object lacks it."""
        where = _row(chunk.start, offset)
        if offset in chunk.broken:
            return RowError(chunk.start + offset + 1, "malformed_row", chunk.broken[offset])
        checked: dict[str, Any] = {}
        for feature in self._features:
            if offset in absent.get(feature.name, ()):
                message = f"{where}: missing feature {feature.name!r}"
                return RowError(chunk.start + offset + 1, "missing_feature", message)
            value = self._raw_value(chunk, feature, offset)
            try:
                if chunk.kind == "text":
                    value = parse_cell(feature, value, offset, lambda _: where)
                column = self.schema.check_column(feature, [value], lambda _: where, {})
            except InvalidInput as exc:
                return RowError(chunk.start + offset + 1, exc.reason, exc.message)
            checked[feature.name] = column[0]
        for name, value in checked.items():
            columns[name].values[offset] = value
        return None

    @staticmethod
    def _raw_value(chunk: Chunk, feature: FeatureSpec, offset: int) -> Any:
        data = chunk.columns[feature.name]
        if chunk.kind == "json":
            return data[offset]
        value = data[offset].as_py()
        if isinstance(value, Decimal):
            value = float(value)
        if isinstance(value, float) and math.isnan(value):
            return None  # a typed NaN is a missing number
        return value
