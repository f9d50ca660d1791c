"""How a text cell (a CSV field) becomes a value: the one set of rules for every CSV reader.

``/predict`` CSV uploads parse cell by cell with :func:`parse_cell`; batch scoring checks whole
columns at once with the same pattern and missing markers (``app/batch/validation.py``) and
falls back to :func:`parse_cell` for the rows that do not pass, so both accept exactly the
same cells and name errors the same way.

Rules: surrounding whitespace is dropped; ``""``, ``NA``, ``NaN`` and ``null`` (any case) mean
missing; a category is the text itself; a number must match :data:`NUMBER_PATTERN` (ASCII
digits, optional sign, fraction and exponent: no ``1_000``, no ``inf``, no non-ASCII digits).
"""

from __future__ import annotations

import re
import sys
from typing import Any

from app.errors import InvalidInput
from app.registry.meta import FeatureSpec
from app.serving.inputs import Locate, describe

NUMBER_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
MISSING_CELLS = frozenset({"", "na", "nan", "null"})
# What ``str.strip()`` removes, spelled out for readers that trim whole columns at once.
WHITESPACE = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())

_NUMBER = re.compile(NUMBER_PATTERN)


def parse_cell(feature: FeatureSpec, cell: str, index: int, where: Locate) -> Any:
    """The value ``cell`` (of row ``index``) holds for ``feature``: None (missing), the text
    of a category, an int (integer features) or a float. ``where(index)`` names the row in
    error messages."""
    cell = cell.strip()
    if cell.lower() in MISSING_CELLS:
        return None
    if feature.dtype == "category":
        return cell
    if not _NUMBER.fullmatch(cell):
        raise InvalidInput(
            f"{where(index)}, column {feature.name!r}: expected a number, got {describe(cell)}",
            reason="wrong_type",
        )
    number = float(cell)
    if feature.dtype == "int" and number.is_integer():
        return int(number)
    return number
