"""Input files for the batch tests (penguin rows with an id, in each format, with chosen bad
cells), reading outputs back, and what the service itself answers for the same rows."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.registry.store import ModelRegistry
from app.serving.inputs import InputLimits
from app.serving.model import RuntimeChoice, load_verified
from tests.models import features, penguins, sample_rows

FEATURES = [f.name for f in features()]
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]
PROBAS = [f"proba_{name}" for name in CLASSES]
Row = dict[str, Any]


def penguin_rows(n: int) -> list[Row]:
    """``n`` rows cycling through the penguins: an ``id``, the features, and ``species`` (a
    column no feature uses)."""
    base = sample_rows(len(penguins()))
    species = penguins()["species"].tolist()
    return [{"id": i, **base[i % len(base)], "species": species[i % len(base)]} for i in range(n)]


def write_csv(rows: Sequence[Mapping[str, Any]], raw: Mapping[tuple[int, str], str] = {}) -> bytes:
    """The rows as CSV; ``raw[(row, column)]`` replaces a cell's text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = list(rows[0]) if rows else ["id", *FEATURES, "species"]
    writer.writerow(header)
    for index, row in enumerate(rows):
        writer.writerow(
            [raw.get((index, name), "" if row[name] is None else str(row[name])) for name in header]
        )
    return out.getvalue().encode()


def write_jsonl(rows: Sequence[Mapping[str, Any]], raw: Mapping[int, bytes] = {}) -> bytes:
    """The rows as JSON Lines; ``raw[row]`` replaces a whole line."""
    return b"".join(raw.get(i, orjson.dumps(dict(row))) + b"\n" for i, row in enumerate(rows))


def write_parquet(rows: Sequence[Mapping[str, Any]], row_group_size: int = 250) -> bytes:
    sink = io.BytesIO()
    table = pa.Table.from_pylist([dict(row) for row in rows])
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def encode(rows: Sequence[Mapping[str, Any]], fmt: str) -> bytes:
    if fmt == "csv":
        return write_csv(rows)
    if fmt == "jsonl":
        return write_jsonl(rows)
    return write_parquet(rows)


def put(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as handle:
        handle.write(data)


def read_output(url: str, fmt: str) -> list[Row]:
    """An output file as rows of plain values (None for empty/null cells)."""
    with fsspec.open(url, "rb") as handle:
        data = handle.read()
    if fmt == "jsonl":
        return [orjson.loads(line) for line in data.splitlines()]
    if fmt == "parquet":
        return list(pq.read_table(io.BytesIO(data)).to_pylist())
    convert = pa_csv.ConvertOptions(
        column_types={
            "id": pa.int64(),
            "label": pa.string(),
            "error": pa.string(),
            "row": pa.int64(),
        },
        strings_can_be_null=True,
    )
    return list(pa_csv.read_csv(io.BytesIO(data), convert_options=convert).to_pylist())


def service_answers(
    registry: ModelRegistry,
    tag: str,
    rows: Sequence[Mapping[str, Any]],
    runtime: RuntimeChoice = "auto",
) -> tuple[list[str], np.ndarray[Any, Any]]:
    """Labels and probabilities the service's own model path gives ``rows``."""
    model = load_verified(registry, tag, InputLimits(sys.maxsize, 256), runtime=runtime)
    batch = model.schema.rows_to_batch([{name: row[name] for name in FEATURES} for row in rows])
    result = model.predict(batch)
    return result.labels, result.probabilities


def assert_scored_like_the_service(
    output: Sequence[Mapping[str, Any]],
    registry: ModelRegistry,
    tag: str,
    rows: Sequence[Mapping[str, Any]],
    runtime: RuntimeChoice = "auto",
) -> None:
    """``output`` rows (valid ones, in order) carry the service's labels and probabilities."""
    labels, probabilities = service_answers(registry, tag, rows, runtime)
    assert [row["label"] for row in output] == labels
    got = np.array([[row[name] for name in PROBAS] for row in output], dtype=np.float64)
    np.testing.assert_allclose(got, probabilities, rtol=0, atol=1e-9)
    assert all(row["error"] is None for row in output)
