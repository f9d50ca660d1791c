"""Dataset sources: a CSV file, or a dataset description naming one that ships in a package.

The source becomes ``data/raw.csv`` byte for byte (a CSV source is copied unchanged), so its
sha256 is the data fingerprint recorded with every experiment, and line numbers in error
messages are those of the user's file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ml.errors import DataError

if TYPE_CHECKING:  # pandas is imported only for packaged datasets: CSV sources are copied
    import pandas as pd

DESCRIPTION_SUFFIXES = frozenset({".yaml", ".yml"})


def _palmerpenguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


PACKAGED: dict[str, Callable[[], pd.DataFrame]] = {"palmerpenguins": _palmerpenguins}


def read_source(source: Path) -> bytes:
    """The raw CSV bytes of ``source``; raises DataError naming the file when it is unusable."""
    if not source.is_file():
        raise DataError(
            f"data.source: {source} is not a file (paths are relative to the repo root)"
        )
    if source.suffix.lower() in DESCRIPTION_SUFFIXES:
        return _packaged_csv(source)
    data = source.read_bytes()
    if not data.strip():
        raise DataError(f"{source}: the file is empty: expected a CSV header and rows")
    return data


def _packaged_csv(description: Path) -> bytes:
    try:
        document = yaml.safe_load(description.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{description}: not valid YAML: {' '.join(str(exc).split())}") from None
    package = document.get("package") if isinstance(document, dict) else None
    if package not in PACKAGED:
        known = ", ".join(sorted(PACKAGED))
        raise DataError(f"{description}: key 'package' must name one of: {known} (got {package!r})")
    frame = PACKAGED[package]()
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
