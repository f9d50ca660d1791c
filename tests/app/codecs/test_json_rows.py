"""Our JSON rows against an all-numeric schema, without a server: the fast path (rows as one
matrix) must give what the checking path gives, and refuse what it refuses."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest

from app.codecs.json_rows import decode_json_rows
from app.errors import InvalidInput
from app.registry.meta import FeatureSpec
from app.serving.inputs import FEW_VALUES, InputLimits, InputSchema

FEATURES = [FeatureSpec(name=f"f{i}", dtype="float") for i in range(6)] + [
    FeatureSpec(name="count", dtype="int")
]
NAMES = [feature.name for feature in FEATURES]
SCHEMA = InputSchema(FEATURES, InputLimits(max_rows=100, max_string_length=8))


def rows(n: int = 5) -> list[dict[str, Any]]:
    generator = np.random.default_rng(7)
    return [
        {**{f"f{i}": float(v) for i, v in enumerate(generator.normal(size=6))}, "count": j}
        for j in range(n)
    ]


def expected(given: list[dict[str, Any]]) -> list[list[float]]:
    return [[float(row[name]) for name in NAMES] for row in given]


def matrix_of(body: bytes) -> list[list[float]]:
    batch = decode_json_rows(body).to_batch(SCHEMA)
    assert batch.matrix is not None
    return list(batch.matrix.tolist())


def test_rows_in_schema_order_become_the_matrix() -> None:
    given = rows()
    assert matrix_of(orjson.dumps({"instances": given})) == expected(given)


def test_keys_in_another_order_give_the_schema_order() -> None:
    given = rows()
    order = random.Random(3).sample(NAMES, len(NAMES))
    assert order != NAMES
    shuffled = [{name: row[name] for name in order} for row in given]
    assert matrix_of(orjson.dumps({"instances": shuffled})) == expected(given)


def test_a_later_row_out_of_schema_order_is_read_by_name() -> None:
    # The first rows in schema order, then one with two keys swapped: read in order, the
    # swapped row's two values would land in each other's column.
    given = rows(4)
    swapped = {"f1": given[3]["f1"], "f0": given[3]["f0"], **given[3]}
    assert list(swapped) == ["f1", "f0", *NAMES[2:]]
    body = orjson.dumps({"instances": [*given[:3], swapped]})
    assert matrix_of(body) == expected(given)


def test_rows_of_new_key_objects_in_schema_order_become_the_matrix() -> None:
    # Rows built here, not parsed: no key is the same object as the schema's or the first
    # row's, so only equal names can make the in-order read.
    given = [{"".join(name): value for name, value in row.items()} for row in rows()]
    batch = SCHEMA.rows_to_batch(given)
    assert batch.matrix is not None
    assert batch.matrix.tolist() == expected(given)


def test_keys_in_a_different_order_per_row_give_the_schema_order() -> None:
    given = rows(8)
    shuffled = [
        {name: row[name] for name in random.Random(i).sample(NAMES, len(NAMES))}
        for i, row in enumerate(given)
    ]
    assert matrix_of(orjson.dumps({"instances": shuffled})) == expected(given)


@pytest.mark.parametrize("n", [4, 50])
def test_zeros_and_ones_that_are_numbers_pass(n: int) -> None:
    given = rows(n)
    given[0] |= {"f0": 0, "f1": 1, "f2": 0.0, "f3": 1.0}  # what a bool would convert to
    assert matrix_of(orjson.dumps({"instances": given})) == expected(given)


def body_with(row: int, feature: str, literal: str, n: int = 4) -> bytes:
    """A body of ``n`` rows where ``row``'s ``feature`` is ``literal``, written verbatim."""
    given = rows(n)
    given[row][feature] = 12345.678
    body = orjson.dumps({"instances": given})
    assert body.count(b"12345.678") == 1
    return body.replace(b"12345.678", literal.encode())


# 4 rows: few enough values that every type is looked at; 50 rows: types are looked at only
# because a bool turns into a 0 or a 1.
@pytest.mark.parametrize("n", [4, 50])
@pytest.mark.parametrize("literal", ["true", "false"])
def test_a_bool_among_numbers_is_refused_naming_row_and_feature(literal: str, n: int) -> None:
    assert (n * len(FEATURES) > FEW_VALUES) == (n == 50)  # both paths, whatever the bound
    with pytest.raises(InvalidInput, match=r"instances\[1\]: feature 'f2' expects a number"):
        decode_json_rows(body_with(1, "f2", literal, n)).to_batch(SCHEMA)


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ('"1.5"', r"instances\[2\]: feature 'f4' expects a number, got '1.5'"),
        ("null", r"instances\[2\]: feature 'f4' may not be null"),
        ("[1.0]", r"instances\[2\]: feature 'f4' expects a number"),
        ('{"x": 1}', r"instances\[2\]: feature 'f4' expects a number"),
        ("1" + "0" * 17, r"instances\[2\]: feature 'f4' is out of range"),
        ("1e300", r"instances\[2\]: feature 'f4' is out of range"),
    ],
    ids=["numeric string", "null", "list", "object", "huge int", "huge float"],
)
def test_every_other_value_that_is_not_a_plain_number_is_refused(
    literal: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_json_rows(body_with(2, "f4", literal)).to_batch(SCHEMA)


def test_an_int_feature_with_a_fraction_is_refused() -> None:
    given = rows(3)
    given[1]["count"] = 2.5
    with pytest.raises(InvalidInput, match=r"instances\[1\]: feature 'count' expects an integer"):
        decode_json_rows(orjson.dumps({"instances": given})).to_batch(SCHEMA)


def test_a_duplicate_key_is_not_taken_for_a_missing_feature() -> None:
    given = rows(2)
    body = orjson.dumps({"instances": given}).replace(b'"f5":', b'"f0":', 1)
    with pytest.raises(InvalidInput, match=r"instances\[0\]: missing feature\(s\) 'f5'"):
        decode_json_rows(body).to_batch(SCHEMA)
