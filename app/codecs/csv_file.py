"""CSV with a header row naming the features (an upload, or a ``text/csv`` body).

Columns that no feature uses (a label or id column, as in a held-out test file) are ignored
and named in the answer; a missing feature is an error. Cells are text: numbers are parsed
here, strictly (no ``1_000``, no non-ASCII digits), and ``""``/``NA``/``NaN``/``null`` mean
missing.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from app.codecs.cells import parse_cell
from app.errors import InvalidInput, MalformedRequest
from app.serving.inputs import Batch, InputSchema


def csv_line(index: int) -> str:
    """Row ``index`` of the body (0-based) as the file's line number; line 1 is the header."""
    return f"CSV line {index + 2}"


@dataclass(frozen=True)
class CsvTable:
    header: list[str]
    records: list[list[str]]

    def ignored(self, schema: InputSchema) -> list[str]:
        known = set(schema.names)
        return [name for name in self.header if name not in known]

    def to_batch(self, schema: InputSchema) -> Batch:
        position = {name: i for i, name in enumerate(self.header)}
        columns: dict[str, list[Any]] = {}
        for feature in schema.features:
            index = position.get(feature.name)
            if index is None:
                continue  # columns_to_batch names every missing feature
            columns[feature.name] = [
                parse_cell(feature, record[index], row, csv_line)
                for row, record in enumerate(self.records)
            ]
        return schema.columns_to_batch(columns, len(self.records), csv_line, "CSV header")


def decode_csv(data: bytes) -> CsvTable:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(
            f"CSV file is not UTF-8 text (byte {exc.start}): re-encode it as UTF-8",
            reason="malformed_csv",
        ) from exc
    if "\x00" in text:
        raise MalformedRequest("CSV file contains NUL bytes", reason="malformed_csv")
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise MalformedRequest(f"CSV file is malformed: {exc}", reason="malformed_csv") from exc
    records = [record for record in records if record]  # blank lines carry no rows
    if not records:
        raise InvalidInput("CSV file is empty: expected a header row", reason="empty")
    header = [name.strip() for name in records[0]]
    if len(set(header)) != len(header):
        raise InvalidInput("CSV header repeats a column name", reason="malformed_csv")
    body = records[1:]
    for index, record in enumerate(body):
        if len(record) != len(header):
            raise InvalidInput(
                f"{csv_line(index)}: {len(record)} fields, header has {len(header)}",
                reason="malformed_csv",
            )
    return CsvTable(header, body)
