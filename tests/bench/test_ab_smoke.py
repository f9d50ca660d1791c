"""A short run of the A/B script: HEAD's code against the working tree's, side by side."""

from __future__ import annotations

import shutil

import pytest

from tests.bench.script import run_script, table_rows

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
@pytest.mark.skipif(shutil.which("git") is None, reason="git not available")
def test_ab_smoke_run_serves_both_revisions_and_prints_their_ratio() -> None:
    output = run_script(
        "ab.py",
        *("--base", "HEAD", "--model", "light", "--clients", "1"),
        *("--pairs", "2", "--duration", "1"),
    )
    (cells,) = table_rows(output)
    assert cells[0] == "1"  # clients
    for side in (cells[1], cells[2]):
        runs = [float(run.replace(",", "")) for run in side.split(" / ")]
        assert len(runs) == 2  # one run each per pair
        assert min(runs) > 20  # req/s
    assert float(cells[3]) > 0  # median of the pair ratios
    assert cells[6] == "0"  # errors
    assert cells[7].endswith("%")  # CPU steal
