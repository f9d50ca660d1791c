"""Vectorised chunk checks accept exactly what ``/predict`` accepts, with the same values and
reasons: every tricky cell is compared with the CSV codec (text) or the JSON row path."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from app.batch.reading import Chunk
from app.batch.validation import ChunkValidator
from app.codecs.cells import WHITESPACE
from app.codecs.csv_file import CsvTable
from app.errors import InvalidInput
from app.registry.meta import FeatureSpec
from app.serving.inputs import InputLimits, InputSchema

LIMITS = InputLimits(max_rows=sys.maxsize, max_string_length=12)
SPECS = [
    FeatureSpec(name="n", dtype="int"),
    FeatureSpec(name="x", dtype="float", nullable=True),
    FeatureSpec(name="c", dtype="category", categories=["a", "b"]),
    FeatureSpec(name="d", dtype="category", categories=["a", "b"], nullable=True),
]
NUMBER_CELLS = [
    "48", "48.6", " 48.6 ", "\u00a048.6\u2003", "\x1c5\x1f", "+1", "-0", "1.", ".5", "1e5",
    "1E+05", "1e400", "-1e400", "1e-400", "1_000", "\u0661\u0662", "\uff11\uff12", "0x10",
    "inf", "-Infinity", "NaN", "nan", "NA", "null", "NULL", "", "  ", "1e", "e5", ".", "1.2.3",
    "1e15", "1e16", "-999999999999999", "999999999999999.9", "12abc", "4.0", "4.5", "--1",
]  # fmt: skip
CATEGORY_CELLS = [
    "a", " a ", "\u3000b", "NA", "", "null", "Atlantis", "x" * 12, "x" * 13, " " + "x" * 12,
    "A", "n/a", "\u200ba", *(f"{space}b{space}" for space in WHITESPACE),
]  # fmt: skip


def through_predict(feature: FeatureSpec, cell: str) -> tuple[bool, Any]:
    """(True, value) or (False, reason) from the /predict CSV codec, for one cell."""
    schema = InputSchema([feature], LIMITS)
    try:
        batch = CsvTable([feature.name], [[cell]]).to_batch(schema)
    except InvalidInput as exc:
        return False, exc.reason
    return True, batch.columns[feature.name][0]


def through_batch(feature: FeatureSpec, cells: list[str]) -> list[tuple[bool, Any]]:
    chunk = Chunk(0, 0, len(cells), "text", {feature.name: pa.array(cells, pa.string())})
    checked = ChunkValidator(InputSchema([feature], LIMITS)).validate(chunk)
    reasons = {error.row - 1: error.reason for error in checked.errors}
    values = iter(checked.batch.columns[feature.name] if checked.batch else [])
    return [
        (True, next(values)) if ok else (False, reasons[i]) for i, ok in enumerate(checked.valid)
    ]


def same(left: tuple[bool, Any], right: tuple[bool, Any]) -> bool:
    """Both accepted with equal values (NaN equal to NaN), or both refused for one reason."""
    (ok, a), (other_ok, b) = left, right
    if ok != other_ok:
        return False
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


@pytest.mark.parametrize("feature", SPECS, ids=[f"{f.dtype}-nullable={f.nullable}" for f in SPECS])
def test_text_cells_are_judged_as_the_csv_codec_judges_them(feature: FeatureSpec) -> None:
    cells = CATEGORY_CELLS if feature.dtype == "category" else NUMBER_CELLS
    # All cells in one chunk (a column that does not cast whole), and each cell alone.
    together = through_batch(feature, cells)
    for cell, outcome in zip(cells, together, strict=True):
        expected = through_predict(feature, cell)
        assert same(outcome, expected), f"{cell!r}: batch {outcome}, /predict {expected}"
        (alone,) = through_batch(feature, [cell])
        assert same(alone, expected), f"{cell!r} alone: batch {alone}, /predict {expected}"


def test_a_clean_chunk_is_never_checked_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    feature = SPECS[1]
    validator = ChunkValidator(InputSchema([feature], LIMITS))

    def refuse(*args: Any) -> None:
        raise AssertionError("the row-by-row path ran on a clean chunk")

    monkeypatch.setattr(validator, "_check_row", refuse)
    cells = [f"{i / 7:.3f}" for i in range(5000)] + ["NA", " 1e3 "]
    checked = validator.validate(Chunk(0, 0, len(cells), "text", {"x": pa.array(cells)}))
    assert checked.valid.all()
    assert checked.batch is not None
    assert np.isnan(checked.batch.columns["x"][-2])


JSON_VALUES: list[Any] = [3, 3.0, 3.5, "3", True, None, 10**20, -(10**15), 1e300, [1], {"a": 1}]


@pytest.mark.parametrize("feature", SPECS[:2], ids=["int", "float-nullable"])
def test_json_values_are_judged_as_json_rows_are(feature: FeatureSpec) -> None:
    schema = InputSchema([feature], LIMITS)
    chunk = Chunk(0, 0, len(JSON_VALUES), "json", {feature.name: list(JSON_VALUES)})
    checked = ChunkValidator(schema).validate(chunk)
    reasons = {error.row - 1: error.reason for error in checked.errors}
    values = iter(checked.batch.columns[feature.name] if checked.batch else [])
    for index, value in enumerate(JSON_VALUES):
        try:
            row = schema.rows_to_batch([{feature.name: value}])
            expected: tuple[bool, Any] = (True, row.columns[feature.name][0])
        except InvalidInput as exc:
            expected = (False, exc.reason)
        got = (True, next(values)) if checked.valid[index] else (False, reasons[index])
        assert same(got, expected), f"{value!r}: batch {got}, /predict {expected}"


def test_typed_columns_take_nulls_and_nan_as_missing_and_check_ranges() -> None:
    schema = InputSchema(SPECS, LIMITS)
    columns = {
        "n": pa.array([1, 2, None, 4, 10**16], pa.int64()),
        "x": pa.array([1.5, math.nan, None, math.inf, 2.0], pa.float64()),
        "c": pa.array(["a", "b", "a", None, "zz"]).dictionary_encode(),
        "d": pa.array([None, "", "b", "a", "x" * 13], pa.string()),
    }
    checked = ChunkValidator(schema).validate(Chunk(0, 10, 5, "typed", columns))
    assert checked.valid.tolist() == [True, True, False, False, False]
    assert [(e.row, e.reason) for e in checked.errors] == [
        (13, "null_value"),  # n is not nullable
        (14, "out_of_range"),  # x is infinite
        (15, "out_of_range"),  # n is beyond 1e15
    ]
    assert checked.errors[0].message == "row 13: feature 'n' may not be null"
    assert checked.batch is not None
    assert checked.batch.columns["n"].tolist() == [1.0, 2.0]
    assert math.isnan(checked.batch.columns["x"][1])
    assert checked.batch.columns["d"].tolist() == ["", ""]  # null, and an empty string
    assert checked.unknown_categories == {"d": 1}  # "" is a value no one trained on
