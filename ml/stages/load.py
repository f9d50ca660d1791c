"""Stage ``load``: copy the dataset named by params ``data.source`` to ``data/raw.csv``."""

from __future__ import annotations

from pathlib import Path

from app.registry import sha256_hex
from ml.errors import run_stage
from ml.layout import RAW_DATA
from ml.params import load_params
from ml.sources import read_source


def load(source: Path, output: Path) -> str:
    """Write the raw CSV of ``source`` to ``output``; return its sha256 (the data fingerprint)."""
    data = read_source(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return sha256_hex(data)


def _run() -> None:
    params = load_params()
    fingerprint = load(Path(params.data.source), RAW_DATA)
    print(f"load: {params.data.source} -> {RAW_DATA} (sha256 {fingerprint[:12]})")


def main() -> None:
    run_stage("load", _run)


if __name__ == "__main__":
    main()
