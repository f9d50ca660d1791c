"""A short run of the batch benchmark: it generates rows, scores them pinned to one core with
the baseline, and prints its table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.bench.script import run_script, table_rows


@pytest.mark.slow  # three Python start-ups (the script, then one scoring run per format)
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
def test_batch_benchmark_smoke_run_prints_a_table(tmp_path: Path) -> None:
    output = run_script(
        "batch.py",
        *("--rows", "20000", "--models", "logreg", "--formats", "parquet,csv"),
        *("--workdir", str(tmp_path)),
    )
    rows = [cells for cells in table_rows(output) if cells[0] == "logreg"]
    assert len(rows) == 2
    for cells in rows:
        assert cells[1] == "onnx"  # the baseline has a verified ONNX copy
        assert cells[3] == "20,000"
        assert float(cells[4].replace(",", "")) > 1000  # rows/s
        assert float(cells[5].replace(",", "")) > 1000  # rows per CPU-second
        assert 50 < float(cells[7]) < 1000  # peak RSS MiB, measured
