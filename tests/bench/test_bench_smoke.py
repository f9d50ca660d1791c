"""A short run of the benchmark script: it starts ml-api, drives it with wrk, prints its table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
def test_benchmark_smoke_run_prints_a_table_without_errors() -> None:
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--skip-peer"]
    result = subprocess.run(
        [*command, "--duration", "1", "--clients", "1,8", "--models", "heavy", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if "| ml-api (1 worker) |" in line]
    assert len(rows) == 3  # 1 and 8 clients on one row, 8 clients on 100 rows
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == "heavy"
        assert float(cells[4].replace(",", "")) > 50  # req/s
        assert cells[5].endswith("%")  # spread of the two runs
        assert cells[8] == "0"  # errors
        assert cells[10].endswith("%")  # CPU steal


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
def test_oip_workload_smoke_run_compares_v2_infer_with_predict() -> None:
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--workload", "oip", "--skip-peer"]
    result = subprocess.run(
        [*command, "--duration", "1", "--clients", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ml-api ")]
    assert len(rows) == 4  # /v2 infer and /predict, each on 1 and 100 rows
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[3].replace(",", "")) > 20  # req/s
        assert cells[6] == "0"  # errors
    oip = [row for row in rows if "/v2/" in row]
    assert len(oip) == 2
    assert all(row.rstrip(" |").endswith("%") for row in oip)  # its share of /predict's
