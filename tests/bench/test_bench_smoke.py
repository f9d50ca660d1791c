"""A short run of the benchmark script: it starts ml-api, drives it with wrk, prints its table."""

from __future__ import annotations

import shutil

import pytest

from tests.bench.script import run_script, table_rows

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
def test_benchmark_smoke_run_prints_a_table_without_errors() -> None:
    output = run_script(
        "run.py",
        *("--skip-peer", "--duration", "1", "--clients", "1,8", "--models", "heavy"),
        *("--repeats", "2"),
    )
    rows = [cells for cells in table_rows(output) if cells[1] == "ml-api (1 worker)"]
    assert len(rows) == 3  # 1 and 8 clients on one row, 8 clients on 100 rows
    for cells in rows:
        assert cells[0] == "heavy"
        assert float(cells[4].replace(",", "")) > 50  # req/s
        assert cells[5].endswith("%")  # spread of the two runs
        assert cells[8] == "0"  # errors
        assert cells[10].endswith("%")  # CPU steal
    (same_body,) = [cells for cells in table_rows(output) if "peer's body" in cells[1]]
    assert same_body[2:4] == ["100 rows", "8"]  # the peer's OIP tensor, to our /v2 endpoint
    assert float(same_body[4].replace(",", "")) > 5
    assert same_body[8] == "0"
    # Two workers, in runs alternated with the one-worker server's, and their ratio.
    two = [cells for cells in table_rows(output) if cells[1] == "ml-api (2 workers)"]
    assert [cells[3] for cells in two] == ["1", "8"]
    assert all(cells[8] == "0" for cells in two)
    scaling = [cells for cells in table_rows(output) if len(cells) == 7 and cells[0] == "heavy"]
    assert [cells[1] for cells in scaling] == ["1", "8"]
    for cells in scaling:
        one_runs, two_runs = (cells[i].split(" / ") for i in (2, 3))
        assert len(one_runs) == len(two_runs) == 2
        assert float(cells[4]) > 0  # best ÷ best
        assert float(cells[5]) > 0  # median of the run-by-run ratios


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not available")
def test_oip_workload_smoke_run_compares_v2_infer_with_predict() -> None:
    output = run_script(
        "run.py",
        *(
            "--workload",
            "oip",
            "--skip-peer",
            "--duration",
            "1",
            "--clients",
            "1",
            "--repeats",
            "1",
        ),
    )
    rows = [cells for cells in table_rows(output) if cells[0].startswith("ml-api ")]
    assert len(rows) == 4  # /v2 infer and /predict, each on 1 and 100 rows
    for cells in rows:
        assert float(cells[3].replace(",", "")) > 20  # req/s
        assert cells[6] == "0"  # errors
    oip = [cells for cells in rows if "/v2/" in cells[0]]
    assert len(oip) == 2
    for cells in oip:  # its share of /predict's: best against best, and round by round
        assert cells[-2].endswith("%")
        assert cells[-1].endswith("%")
        assert float(cells[-1].rstrip("%")) > 0
