"""Scoring one chunk: validated rows to the model, and the chunk's output table.

The output has, in this order: the input row number ``row`` (sharded runs only, so the
shards' outputs sort back into input order), the ``--keep`` columns as they were read,
``label``, one ``proba_<class>`` per class, and ``error`` (null, or why the row was not
scored; such a row has no label and no probabilities).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from app.batch.reading import Chunk
from app.batch.summary import ChunkStats
from app.batch.validation import ChunkValidator
from app.errors import BatchInputError
from app.serving.model import LoadedModel

LABEL, ERROR, ROW = "label", "error", "row"


@dataclass(frozen=True)
class OutputLayout:
    """The output's columns, fixed for a run."""

    keep: tuple[str, ...]
    classes: tuple[str, ...]
    with_row: bool = False

    @property
    def proba_columns(self) -> list[str]:
        return [f"proba_{name}" for name in self.classes]

    @property
    def names(self) -> list[str]:
        first = [ROW] if self.with_row else []
        return [*first, *self.keep, LABEL, *self.proba_columns, ERROR]

    def check(self) -> None:
        """Raise when a ``--keep`` column would collide with a column the run writes."""
        written = {LABEL, ERROR, *self.proba_columns, *([ROW] if self.with_row else [])}
        clash = [name for name in self.keep if name in written]
        if clash:
            raise BatchInputError(
                f"--keep {', '.join(map(repr, clash))}: the output writes a column of that "
                "name; rename the input column"
            )
        if len(set(self.proba_columns)) != len(self.classes):
            raise BatchInputError("the model's classes give clashing proba_<class> columns")

    def empty_table(self, keep_types: dict[str, pa.DataType]) -> pa.Table:
        """The output of no rows, for an input (or a shard) without any."""
        fields = [pa.field(ROW, pa.int64())] if self.with_row else []
        fields += [pa.field(name, keep_types.get(name, pa.string())) for name in self.keep]
        fields += [pa.field(LABEL, pa.string())]
        fields += [pa.field(name, pa.float64()) for name in self.proba_columns]
        fields += [pa.field(ERROR, pa.string())]
        return pa.schema(fields).empty_table()


def _keep_array(values: Any) -> pa.Array:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # JSON values of mixed types in one column: kept as their JSON text.
        return pa.array([None if v is None else orjson.dumps(v).decode() for v in values])


class ChunkScorer:
    """Validates and scores chunks with one loaded model."""

    def __init__(self, model: LoadedModel, layout: OutputLayout) -> None:
        self.model = model
        self.layout = layout
        self.validator = ChunkValidator(model.schema)
        self._classes = pa.array(list(model.classes), pa.string())

    @property
    def runtime(self) -> str:
        return str(self.model.runtime.name)

    def score(self, chunk: Chunk) -> tuple[pa.Table, ChunkStats]:
        started = time.perf_counter()
        checked = self.validator.validate(chunk)
        n = chunk.n_rows
        valid = checked.valid
        probabilities = np.full((n, len(self.layout.classes)), np.nan)
        top = np.zeros(n, dtype=np.int32)
        if checked.batch is not None:
            scored = self.model.predict_proba(checked.batch)
            probabilities[valid] = scored
            top[valid] = scored.argmax(axis=1)
        invalid = ~valid
        columns: dict[str, pa.Array] = {}
        if self.layout.with_row:
            columns["row"] = pa.array(np.arange(chunk.start, chunk.start + n, dtype=np.int64))
        for name in self.layout.keep:
            columns[name] = _keep_array(chunk.columns[name])
        columns[LABEL] = pc.take(self._classes, pa.array(top, mask=invalid))
        for i, name in enumerate(self.layout.proba_columns):
            columns[name] = pa.array(probabilities[:, i], mask=invalid)
        errors: list[str | None] = [None] * n
        for error in checked.errors:
            errors[error.row - 1 - chunk.start] = error.message
        columns[ERROR] = pa.array(errors, pa.string())
        table = pa.table(columns)
        stats = ChunkStats.of(
            chunk.index,
            chunk.start,
            n,
            checked.errors,
            checked.unknown_categories,
            self.runtime,
            time.perf_counter() - started,
        )
        return table, stats


def keep_types(layout: OutputLayout, types: dict[str, pa.DataType], kind: str) -> dict[str, Any]:
    """Arrow types of the kept columns for an empty output: declared (Parquet), text (CSV)."""
    if kind == "text":
        return dict.fromkeys(layout.keep, pa.string())
    return {name: types[name] for name in layout.keep if name in types}
