"""What one batch run is asked to do: input, output, model, chunking, workers, shard."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal, get_args

from app.errors import BatchInputError

Format = Literal["csv", "parquet", "jsonl"]
FORMATS: tuple[Format, ...] = get_args(Format)
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
DEFAULT_CHUNK_ROWS = 50_000


def format_of(url: str, given: Format | None, what: str) -> Format:
    """``given``, or the format the file name's extension says."""
    if given is not None:
        return given
    extension = posixpath.splitext(url.rstrip("/"))[1].lower()
    if extension not in EXTENSIONS:
        known = ", ".join(sorted(EXTENSIONS))
        raise BatchInputError(
            f"cannot tell the format of the {what} {url!r} from its name (known: {known}); "
            "say it with --format/--output-format"
        )
    return EXTENSIONS[extension]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the chunks whose index modulo ``count`` is ``index``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise BatchInputError(f"--shard {text!r}: expected i/N, e.g. 0/4")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or index >= count:
            raise BatchInputError(f"--shard {text!r}: need 0 <= i < N")
        return cls(index, count)

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ScoreOptions:
    """One ``ml-api score`` run. ``progress``: True a bar, False log lines, None a bar only
    on a terminal."""

    input_url: str
    output_url: str
    tag: str | None = None
    input_format: Format | None = None
    output_format: Format | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    keep: tuple[str, ...] = ()
    fail_fast: bool = False
    workers: int = 1
    shard: Shard | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise BatchInputError("--chunk-rows must be at least 1")
        if self.workers < 1:
            raise BatchInputError("--workers must be at least 1")
        if len(set(self.keep)) != len(self.keep):
            raise BatchInputError(f"--keep names a column twice: {', '.join(self.keep)}")
        if self.input_url.rstrip("/") == self.output_url.rstrip("/"):
            raise BatchInputError("the output would overwrite the input: choose another path")

    @property
    def resolved_input_format(self) -> Format:
        return format_of(self.input_url, self.input_format, "input")

    @property
    def resolved_output_format(self) -> Format:
        return format_of(self.output_url, self.output_format, "output")


def parse_keep(text: str | None) -> tuple[str, ...]:
    """``--keep id,date`` as a tuple of column names."""
    if not text:
        return ()
    names = tuple(name.strip() for name in text.split(","))
    if any(not name for name in names):
        raise BatchInputError(f"--keep {text!r}: empty column name")
    return names
