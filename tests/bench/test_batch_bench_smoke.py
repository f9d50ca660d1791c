"""A short run of the batch benchmark: it generates rows, scores them pinned to one core with
the baseline, and prints its table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three Python start-ups (the script, then one scoring run per format)
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
def test_batch_benchmark_smoke_run_prints_a_table(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "batch.py"), "--rows", "20000"]
    result = subprocess.run(
        [*command, "--models", "logreg", "--formats", "parquet,csv", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| logreg |")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "onnx"  # the baseline has a verified ONNX copy
        assert cells[3] == "20,000"
        assert float(cells[4].replace(",", "")) > 1000  # rows/s
        assert float(cells[5].replace(",", "")) > 1000  # rows per CPU-second
        assert 50 < float(cells[7]) < 1000  # peak RSS MiB, measured
