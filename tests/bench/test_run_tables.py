"""The tables of bench/run.py: which figures each ratio is made of.

The smoke runs cannot start MLServer here (`--skip-peer`), so the ratios against it are
checked on measurements made up for the purpose.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

from tests.bench.script import ROOT, table_rows


def _load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


run = _load_run()


def point(server: str, runs: tuple[float, ...], workload: str = "100 rows") -> Any:
    return run.Measurement(
        server=server,
        workload=workload,
        clients=8,
        rps=max(runs),
        p50_ms=1.0,
        p99_ms=2.0,
        errors=0,
        rss_mib=100.0,
        runs=runs,
    )


def cells_of(text: str, server: str) -> list[str]:
    (cells,) = [cells for cells in table_rows(text) if cells[1] == server]
    return cells


def test_ml_api_is_compared_with_the_best_peer_configuration_both_ways() -> None:
    # Round 1 was slow for everyone: best against best hides that ml-api led in both rounds.
    ours = point("ml-api (1 worker)", (600.0, 1000.0))
    plain = point(run.PEER, (300.0, 560.0))
    batching = point(run.PEER_BATCHING, (310.0, 800.0))
    text = run.table([ours, plain, batching])
    cells = cells_of(text, "ml-api (1 worker)")
    assert cells[11] == "1.25"  # 1000 / 800, the best peer configuration's best
    assert cells[12] == "1.59"  # median of 600/310 and 1000/800
    assert cells_of(text, run.PEER_BATCHING)[11:] == ["", ""]


def test_scaling_rows_get_no_median_against_the_peer_rounds() -> None:
    # Their runs alternate with each other, not with the peers': pairing them would be noise.
    two = point(run.TWO_WORKERS, (1500.0, 1700.0), workload="1 row")
    peer = point(run.PEER, (500.0, 600.0), workload="1 row")
    cells = cells_of(run.table([two, peer]), run.TWO_WORKERS)
    assert cells[11] == "2.83"
    assert cells[12] == ""
