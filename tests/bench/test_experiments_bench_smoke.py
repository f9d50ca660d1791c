"""A short run of the live-experiments benchmark: four servers, the runs interleaved, the
table and the /feedback rate printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # four servers, wrk


def test_experiments_benchmark_smoke_run_measures_every_scenario() -> None:
    command = [sys.executable, str(ROOT / "bench" / "experiments.py")]
    result = subprocess.run(
        [*command, "--duration", "1", "--repeats", "1", "--feedback-items", "500"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        cells[0]: cells
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| scenario")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {"single", "split 90/10", "shadow 100%", "feedback on"}
    for name, cells in rows.items():
        assert float(cells[1].replace(",", "")) > 50, name  # best req/s
        assert (cells[5] == "") == (name == "single"), cells  # the share of single
    assert "/feedback on one worker:" in result.stdout
