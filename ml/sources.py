"""Dataset sources: where params ``data.source`` says the training table comes from.

* a CSV (``.csv``) or Parquet (``.parquet``, ``.pq``) file: a path relative to the repository
  root, an absolute path, or an ``s3://bucket/key`` URL for fresh extracts, read with fsspec
  (s3fs takes the endpoint from ``AWS_ENDPOINT_URL`` and credentials the usual AWS way, like
  the registry does);
* a dataset description (``.yaml``, e.g. ``ml/datasets/palmerpenguins.yaml``) naming a table
  that ships inside a package.

DVC tracks every kind as a dependency of the load stage (``${data.source}`` in dvc.yaml): a
file by its md5, an S3 object by its ETag, so ``dvc repro`` loads again when the extract
changes. The load stage also records the sha256 of the bytes it read (``data/source.json``,
and ``data_source_sha256`` in the experiment's meta.json): the ETag of a multipart upload is
no content hash, the sha256 is.

A CSV source becomes ``data/raw.csv`` byte for byte (line numbers in error messages are those
of the user's file); a Parquet file or a packaged table is written as CSV by pandas.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import fsspec
import pandas as pd
import yaml

from app.registry import sha256_hex
from ml.errors import DataError
from ml.validation import line_of, parse_csv

SourceFormat = Literal["csv", "parquet", "package"]
FORMATS: dict[str, SourceFormat] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".yaml": "package",
    ".yml": "package",
}
REMOTE_PROTOCOLS = frozenset({"s3"})


def _palmerpenguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


PACKAGED: dict[str, Callable[[], pd.DataFrame]] = {"palmerpenguins": _palmerpenguins}


@dataclass(frozen=True)
class Fetched:
    """One dataset as read: its bytes' fingerprint, the parsed table, the raw CSV to write."""

    source: str
    format: SourceFormat
    sha256: str  # of the bytes read from the source (for a package: of the CSV it gives)
    size: int
    frame: pd.DataFrame  # as parsed: Parquet columns keep their types
    raw_csv: bytes

    def locate(self, index: Any) -> str:
        """Where a row of ``frame`` is in the source, as a person finds it."""
        if self.format == "parquet":
            return f"row {int(index) + 1}"
        return f"line {line_of(index)}"


def source_format(source: str) -> SourceFormat:
    """The format ``source`` names by its suffix; raise DataError for anything else."""
    protocol, path = fsspec.core.split_protocol(source)
    if protocol is not None and protocol not in REMOTE_PROTOCOLS:
        raise DataError(
            f"data.source: {source}: unsupported URL scheme {protocol!r}: use a path (relative "
            "to the repo root, or absolute) or an s3:// URL"
        )
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"data.source: {source}: unknown format {suffix or '(no suffix)'!r}: expected .csv, "
            ".parquet/.pq, or a dataset description .yaml"
        )
    kind = FORMATS[suffix]
    if kind == "package" and protocol is not None:
        raise DataError(f"data.source: {source}: a dataset description must be a local file")
    return kind


def fetch(source: str) -> Fetched:
    """Read and parse ``source``; raise DataError naming it when it is unusable."""
    kind = source_format(source)
    data = _read_bytes(source)
    if kind == "package":
        frame = _packaged(source, data)
        raw = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
        return Fetched(source, kind, sha256_hex(raw), len(raw), parse_csv(raw, source), raw)
    if not data.strip():
        raise DataError(f"{source}: the file is empty: expected a header and rows")
    if kind == "csv":
        return Fetched(source, kind, sha256_hex(data), len(data), parse_csv(data, source), data)
    frame = _parse_parquet(data, source)
    raw = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    return Fetched(source, kind, sha256_hex(data), len(data), frame, raw)


def _read_bytes(source: str) -> bytes:
    protocol, _ = fsspec.core.split_protocol(source)
    if protocol is None:
        path = Path(source)
        if not path.is_file():
            raise DataError(
                f"data.source: {source} is not a file (paths are relative to the repo root)"
            )
        return path.read_bytes()
    try:
        with fsspec.open(source, "rb") as handle:
            data: bytes = handle.read()
    except FileNotFoundError:
        raise DataError(f"data.source: {source} not found") from None
    except Exception as exc:  # s3fs raises botocore, aiohttp and OS errors alike
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"data.source: cannot read {source}: {reason}") from None
    return data


def _parse_parquet(data: bytes, source: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        reason = " ".join(str(exc).split())
        raise DataError(f"{source}: not a readable Parquet file: {reason}") from None
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()  # a stored index is data: keep it as a column
    return frame.reset_index(drop=True)


def _packaged(description: str, text: bytes) -> pd.DataFrame:
    try:
        document = yaml.safe_load(text.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{description}: not valid YAML: {' '.join(str(exc).split())}") from None
    package = document.get("package") if isinstance(document, dict) else None
    if package not in PACKAGED:
        known = ", ".join(sorted(PACKAGED))
        raise DataError(f"{description}: key 'package' must name one of: {known} (got {package!r})")
    return PACKAGED[package]()
