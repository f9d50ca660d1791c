"""A short run of the live-experiments benchmark: four servers, the runs interleaved, the
table and the /feedback rate printed."""

from __future__ import annotations

import pytest

from tests.bench.script import run_script, table_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # four servers, wrk


def test_experiments_benchmark_smoke_run_measures_every_scenario() -> None:
    output = run_script(
        "experiments.py",
        "--duration",
        "1",
        "--repeats",
        "2",
        "--feedback-items",
        "500",
        timeout=300,
    )
    rows = {cells[0]: cells for cells in table_rows(output)}
    assert set(rows) == {"single", "split 90/10", "shadow 100%", "feedback on"}
    for name, cells in rows.items():
        assert float(cells[1].replace(",", "")) > 50, name  # best req/s
        assert (cells[5] == "") == (name == "single"), cells  # the share of single
        assert (cells[6] == "") == (name == "single"), cells  # paired with single's runs
    assert "/feedback on one worker:" in output


def test_in_process_profile_gives_every_scenarios_cpu_per_request() -> None:
    output = run_script("experiments_profile.py", "--requests", "200", "--rounds", "2")
    rows = {cells[0]: cells for cells in table_rows(output)}
    assert set(rows) == {"single", "split 90/10", "shadow 100%", "feedback on"}
    for name, cells in rows.items():
        cpu = float(cells[4])
        assert 5 < cpu < 50_000, name  # CPU microseconds per request, every thread
        assert cells[5].endswith("%"), cells  # spread of the rounds
        assert cells[6].endswith("%"), cells  # single's CPU over this one's
    assert rows["single"][6] == "100.0%"
    assert output.count("round 2:") == 4
