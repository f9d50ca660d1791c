"""Stage ``load``: read the dataset params ``data.source`` names, check it against the data
contract (``data.contract``), and write it to ``data/raw.csv``.

A broken extract stops here, before anything is trained, with one message naming every
problem. ``data/source.json`` records what was read: the source, its format, the sha256 and
size of its bytes, the rows and columns, and the contract it met.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.registry import sha256_hex
from ml.contract import DataContract, enforce, read_contract
from ml.errors import run_stage
from ml.layout import RAW_DATA, SOURCE_RECORD, write_json
from ml.params import load_params
from ml.sources import fetch


def load(
    source: str, output: Path, *, contract: DataContract | None = None, contract_name: str = ""
) -> dict[str, Any]:
    """Write the raw CSV of ``source`` to ``output`` when it meets ``contract``; return the
    source record (``raw_sha256`` is the data fingerprint). Raises DataError."""
    fetched = fetch(source)
    if contract is not None:
        enforce(
            fetched.frame,
            contract,
            source=source,
            contract_name=contract_name,
            locate=fetched.locate,
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(fetched.raw_csv)
    return {
        "source": source,
        "format": fetched.format,
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "rows": len(fetched.frame),
        "columns": [str(c) for c in fetched.frame.columns],
        "contract": contract_name or None,
        "raw_sha256": sha256_hex(fetched.raw_csv),
    }


def _run() -> None:
    params = load_params()
    name = params.data.contract
    contract = read_contract(Path(name)) if name else None
    record = load(params.data.source, RAW_DATA, contract=contract, contract_name=name or "")
    write_json(SOURCE_RECORD, record)
    checked = f", meets {name}" if name else ", no data contract"
    print(
        f"load: {params.data.source} ({record['format']}, {record['rows']} rows, sha256 "
        f"{record['sha256'][:12]}{checked}) -> {RAW_DATA}"
    )


def main() -> None:
    run_stage("load", _run)


if __name__ == "__main__":
    main()
