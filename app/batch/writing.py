"""Encoding output tables: one chunk's part, and the final file made of the parts in order.

CSV and JSON Lines parts are fragments of the final file (CSV without its header), so the
final file is the header followed by the parts' bytes, copied one at a time. For a Parquet
output the parts are Arrow IPC streams (a memory copy to write and to read back), encoded to
Parquet once, one row group per chunk, when the file is assembled. Memory holds one part at a
time.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import IO

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.batch.options import Format
from app.batch.scoring import LABEL
from app.errors import BatchInputError

COPY_BYTES = 8 << 20


def part_extension(fmt: Format) -> str:
    return "arrow" if fmt == "parquet" else fmt


def encode(table: pa.Table, fmt: Format) -> bytes:
    """One chunk's part of an output in ``fmt``."""
    sink = io.BytesIO()
    if fmt == "csv":
        pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
    elif fmt == "parquet":
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        dumps = orjson.dumps
        sink.write(b"".join(dumps(row) + b"\n" for row in table.to_pylist()))
    return sink.getvalue()


def csv_header(names: list[str]) -> bytes:
    sink = io.BytesIO()
    empty = pa.schema([pa.field(name, pa.string()) for name in names]).empty_table()
    pa_csv.write_csv(empty, sink, pa_csv.WriteOptions(include_header=True))
    return sink.getvalue()


def assemble(
    parts: Iterable[Callable[[], IO[bytes]]],
    fmt: Format,
    out: IO[bytes],
    empty: pa.Table,
) -> None:
    """Write the final output to ``out``: each of ``parts`` (openers, in chunk order) after
    the other. ``empty`` is the output of no rows (its columns and, for Parquet, types)."""
    if fmt == "parquet":
        _assemble_parquet(list(parts), out, empty.schema)
        return
    if fmt == "csv":
        out.write(csv_header(empty.column_names))
    for opener in parts:
        with opener() as part:
            while block := part.read(COPY_BYTES):
                out.write(block)


def _assemble_parquet(
    parts: list[Callable[[], IO[bytes]]], out: IO[bytes], fallback: pa.Schema
) -> None:
    schemas = []
    for opener in parts:
        with opener() as part:
            schemas.append(pa.ipc.open_stream(part).schema)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else fallback
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BatchInputError(f"a kept column changes type between chunks: {exc}") from exc
    # Dictionary encoding pays for the label only: probabilities are all distinct, and trying
    # a dictionary first made writing four times slower.
    with pq.ParquetWriter(out, schema, use_dictionary=[LABEL]) as writer:
        for opener in parts:
            with opener() as part:
                writer.write_table(pa.ipc.open_stream(part).read_all().cast(schema))
