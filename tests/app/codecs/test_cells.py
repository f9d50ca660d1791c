"""The one set of rules for text cells, shared by CSV uploads and batch scoring."""

from __future__ import annotations

import pytest

from app.codecs.cells import WHITESPACE, parse_cell
from app.errors import InvalidInput
from app.registry.meta import FeatureSpec

INT = FeatureSpec(name="n", dtype="int")
FLOAT = FeatureSpec(name="x", dtype="float", nullable=True)
CATEGORY = FeatureSpec(name="c", dtype="category", categories=["a"])


def where(index: int) -> str:
    return f"line {index}"


@pytest.mark.parametrize(
    ("feature", "cell", "value"),
    [
        (FLOAT, " 4.5 ", 4.5),
        (FLOAT, "1e3", 1000.0),
        (FLOAT, ".5", 0.5),
        (INT, "7", 7),
        (INT, "7.0", 7),
        (INT, "7.5", 7.5),  # the schema then refuses it as not an integer
        (FLOAT, "NaN", None),
        (FLOAT, "null", None),
        (FLOAT, "\u3000", None),
        (CATEGORY, " Dream ", "Dream"),
        (CATEGORY, "NA", None),
    ],
)
def test_cells_parse_to_values(feature: FeatureSpec, cell: str, value: object) -> None:
    parsed = parse_cell(feature, cell, 0, where)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize("cell", ["inf", "1_000", "\u0661", "0x10", "1e", "--1", "4,5"])
def test_numbers_are_strict_and_errors_name_the_row_and_column(cell: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_cell(FLOAT, cell, 3, where)
    assert error.value.reason == "wrong_type"
    assert error.value.message.startswith("line 3, column 'x': expected a number, got ")


@pytest.mark.parametrize("space", list(WHITESPACE), ids=[hex(ord(c)) for c in WHITESPACE])
def test_any_whitespace_around_a_cell_is_dropped(space: str) -> None:
    assert parse_cell(FLOAT, f"{space}4.5{space}", 0, where) == 4.5
    assert parse_cell(CATEGORY, f"{space}a{space}", 0, where) == "a"
