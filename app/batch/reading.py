"""Reading an input file in chunks of a fixed number of rows, whatever its size.

Three formats, one shape: a :class:`Chunk` holds the rows ``[start, start + n_rows)`` of the
input, with only the columns the run needs (features and ``--keep`` columns):

* CSV (``text``): Arrow's streaming CSV reader, every column read as text so cells are parsed
  by our own rules, never by type guessing; only needed columns are converted.
* Parquet (``typed``): Arrow record batches of the needed columns, with their types.
* JSON Lines (``json``): one JSON object per line, as plain values; a line that is not a JSON
  object is a broken row (reported, not fatal), blank lines are skipped.

Chunk boundaries depend only on the input and ``chunk_rows``, so a resumed run or another
shard cuts the same chunks. Chunks nobody wants (other shards', already scored ones) are cut
but not converted.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any, Literal, Protocol

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.batch.options import Format
from app.batch.storage import Location
from app.errors import BatchInputError

ColumnKind = Literal["text", "typed", "json"]
CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, start + n_rows)`` of the input. ``columns`` is empty for a chunk that is
    only counted (not wanted by this run)."""

    index: int
    start: int
    n_rows: int
    kind: ColumnKind
    # pa.Array per column (text, typed), or a list of plain values (json)
    columns: dict[str, Any] = field(default_factory=dict)
    # json only: rows (offset in the chunk) that are not a JSON object, and why
    broken: dict[int, str] = field(default_factory=dict)
    # json only: per column, the rows (offsets) whose object lacks that key
    absent: dict[str, list[int]] = field(default_factory=dict)


class InputReader(Protocol):
    kind: ColumnKind
    # Column names known before the first chunk (JSON Lines: the keys of the first object).
    columns: list[str]
    # Arrow types of the columns when the format declares them (Parquet).
    types: dict[str, pa.DataType]
    total_rows: int | None

    def chunks(self, needed: Sequence[str], wanted: Callable[[int], bool]) -> Iterator[Chunk]:
        """Every chunk in order; ``needed`` columns converted for chunks ``wanted`` picks."""
        ...

    def fraction_read(self) -> float | None:
        """How much of the input has been read (0-1), when it can be told."""
        ...

    def close(self) -> None: ...


def open_reader(location: Location, fmt: Format, chunk_rows: int) -> InputReader:
    if not location.exists():
        raise BatchInputError(f"input {location.url!r} does not exist")
    handle: IO[bytes] = location.fs.open(location.path, "rb")
    try:
        size = location.size()
        reader: InputReader
        if fmt == "csv":
            reader = CsvReader(handle, size, chunk_rows, location.url)
        elif fmt == "parquet":
            reader = ParquetReader(handle, chunk_rows, location.url)
        else:
            reader = JsonLinesReader(handle, size, chunk_rows, location.url)
    except BaseException:
        handle.close()
        raise
    return reader


class _Reader:
    """What the readers share: the open file, and closing it."""

    def __init__(self, handle: IO[bytes], url: str) -> None:
        self._handle = handle
        self._url = url

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The rows of ``batches`` again, as tables of exactly ``rows`` rows (the last may have
    fewer)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _arrays(table: pa.Table, names: Sequence[str]) -> dict[str, Any]:
    return {name: table.column(name).combine_chunks() for name in names}


class CsvReader(_Reader):
    kind: ColumnKind = "text"

    def __init__(self, handle: IO[bytes], size: int, chunk_rows: int, url: str) -> None:
        super().__init__(handle, url)
        self._size = size
        self._chunk_rows = chunk_rows
        self.types: dict[str, pa.DataType] = {}
        self.total_rows: int | None = None
        try:
            raw = pa_csv.open_csv(handle, read_options=self._read_options()).schema.names
        except (pa.ArrowInvalid, OSError) as exc:
            raise BatchInputError(f"input {url!r} is not a readable CSV file: {exc}") from exc
        handle.seek(0)
        # Header names are matched without surrounding whitespace, as /predict does.
        self._raw = {name.strip(): name for name in raw}
        if len(self._raw) != len(raw):
            raise BatchInputError(f"input {url!r}: the CSV header repeats a column name")
        self.columns = list(self._raw)

    @staticmethod
    def _read_options() -> pa_csv.ReadOptions:
        return pa_csv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES)

    def fraction_read(self) -> float | None:
        return min(1.0, self._handle.tell() / self._size) if self._size else None

    def chunks(self, needed: Sequence[str], wanted: Callable[[int], bool]) -> Iterator[Chunk]:
        raw = [self._raw[name] for name in needed]
        convert = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(raw, pa.string()),
            include_columns=raw,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        try:
            stream = pa_csv.open_csv(
                self._handle, read_options=self._read_options(), convert_options=convert
            )
            start = 0
            for index, table in enumerate(rechunk(stream, self._chunk_rows)):
                n_rows = table.num_rows
                if wanted(index):
                    table = table.rename_columns(list(needed))
                    yield Chunk(index, start, n_rows, "text", _arrays(table, needed))
                else:
                    yield Chunk(index, start, n_rows, "text")
                start += n_rows
        except pa.ArrowInvalid as exc:
            raise BatchInputError(f"input {self._url!r} is not valid CSV: {exc}") from exc


def holds_numbers(kind: pa.DataType) -> bool:
    """Whether a typed (Parquet) column of this type can hold a numeric feature."""
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    )


def holds_text(kind: pa.DataType) -> bool:
    """Whether a typed (Parquet) column of this type can hold a category feature."""
    if pa.types.is_dictionary(kind):
        return holds_text(kind.value_type)
    return bool(
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
    )


class ParquetReader(_Reader):
    kind: ColumnKind = "typed"

    def __init__(self, handle: IO[bytes], chunk_rows: int, url: str) -> None:
        super().__init__(handle, url)
        self._chunk_rows = chunk_rows
        try:
            self._file = pq.ParquetFile(handle)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BatchInputError(f"input {url!r} is not a readable Parquet file: {exc}") from exc
        schema = self._file.schema_arrow
        self.columns = list(schema.names)
        self.types = {name: schema.field(name).type for name in schema.names}
        self.total_rows: int | None = int(self._file.metadata.num_rows)
        self._rows_read = 0

    def fraction_read(self) -> float | None:
        return self._rows_read / self.total_rows if self.total_rows else None

    def chunks(self, needed: Sequence[str], wanted: Callable[[int], bool]) -> Iterator[Chunk]:
        batches = self._file.iter_batches(
            batch_size=self._chunk_rows, columns=list(needed), use_threads=False
        )
        start = 0
        try:
            for index, table in enumerate(rechunk(batches, self._chunk_rows)):
                n_rows = table.num_rows
                self._rows_read = start + n_rows
                if wanted(index):
                    yield Chunk(index, start, n_rows, "typed", _arrays(table, needed))
                else:
                    yield Chunk(index, start, n_rows, "typed")
                start += n_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise BatchInputError(f"input {self._url!r}: cannot read Parquet data: {exc}") from exc


class JsonLinesReader(_Reader):
    kind: ColumnKind = "json"

    def __init__(self, handle: IO[bytes], size: int, chunk_rows: int, url: str) -> None:
        super().__init__(handle, url)
        self._size = size
        self._chunk_rows = chunk_rows
        self.types: dict[str, pa.DataType] = {}
        self.total_rows: int | None = None
        self.columns = self._first_keys()
        handle.seek(0)
        # Every key seen in the objects of the chunks read (for the ignored columns).
        self.keys_seen: set[str] = set(self.columns)

    def _first_keys(self) -> list[str]:
        for line in self._handle:
            if not line.strip():
                continue
            try:
                first = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BatchInputError(
                    f"input {self._url!r}: the first line is not JSON: {exc}"
                ) from exc
            if not isinstance(first, dict):
                raise BatchInputError(f"input {self._url!r}: the first line is not a JSON object")
            return [str(key) for key in first]
        return []

    def fraction_read(self) -> float | None:
        return min(1.0, self._handle.tell() / self._size) if self._size else None

    def _lines(self) -> Iterator[list[bytes]]:
        pending: list[bytes] = []
        try:
            for line in self._handle:
                if line.strip():
                    pending.append(line)
                    if len(pending) == self._chunk_rows:
                        yield pending
                        pending = []
        except (OSError, io.UnsupportedOperation) as exc:
            raise BatchInputError(f"input {self._url!r}: cannot read: {exc}") from exc
        if pending:
            yield pending

    def chunks(self, needed: Sequence[str], wanted: Callable[[int], bool]) -> Iterator[Chunk]:
        start = 0
        for index, lines in enumerate(self._lines()):
            if wanted(index):
                yield self._parse(index, start, lines, needed)
            else:
                yield Chunk(index, start, len(lines), "json")
            start += len(lines)

    def _parse(self, index: int, start: int, lines: list[bytes], needed: Sequence[str]) -> Chunk:
        columns: dict[str, list[Any]] = {name: [None] * len(lines) for name in needed}
        absent: dict[str, list[int]] = {}
        broken: dict[int, str] = {}
        keys: set[str] = set()
        for offset, line in enumerate(lines):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                broken[offset] = f"row {start + offset + 1}: not valid JSON ({exc})"
                continue
            if not isinstance(record, dict):
                broken[offset] = f"row {start + offset + 1}: not a JSON object"
                continue
            keys.update(record)
            for name in needed:
                try:
                    columns[name][offset] = record[name]
                except KeyError:
                    absent.setdefault(name, []).append(offset)
        self.keys_seen |= keys
        return Chunk(index, start, len(lines), "json", dict(columns), broken, absent)
