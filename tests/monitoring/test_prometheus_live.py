"""Every dashboard query and alert rule, run against a real Prometheus scraping a real service.

A Prometheus server (Debian package) scrapes a running ``ml-api serve --workers 2`` every
second while a small bounded load runs: predictions, invalid requests, unknown categories, a
hot swap and a refused swap. Then each PromQL expression goes to Prometheus's query API.
A panel whose query names a metric that does not exist returns no data and fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.server import Server, auth_headers
from tests.local_server import free_port, wait_for_port, wait_until
from tests.models import sample_rows
from tests.monitoring.promql import Expression, all_expressions, referenced_metrics

pytestmark = pytest.mark.e2e

# A scrape may take no longer than its interval: 2 s leaves room on a busy machine.
SCRAPE_SECONDS = 2


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, seed_registry: Path) -> Iterator[str]:
    """URL of a Prometheus that has scraped a service through a small load."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (apt-get install prometheus); .ci/run installs it")
    root = tmp_path_factory.mktemp("prometheus")
    registry_dir = root / "registry"
    shutil.copytree(seed_registry, registry_dir)
    with Server(
        str(registry_dir), workers=2, env={"ML_API_DRIFT_INTERVAL_SECONDS": "0.5"}
    ) as service:
        prometheus_url, process = _start_prometheus(binary, root, service.port)
        try:
            _wait_for(prometheus_url, 'ml_api_model_swaps_total{result="success"}')
            _load(service.url)
            _wait_for(prometheus_url, 'count(ml_api_input_drift_psi{model_tag="boost"})')
            _load(service.url, swap=False)
            # Two scrapes after the last traffic: rate() and increase() have samples to use.
            _wait_for(prometheus_url, 'count_over_time(up{job="ml-api"}[1m]) > 3')
            yield prometheus_url
        finally:
            process.terminate()
            process.wait(timeout=30)


def _start_prometheus(binary: str, root: Path, service_port: int) -> tuple[str, Any]:
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": "1s"},
        "rule_files": [str(Path(__file__).resolve().parents[2] / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "ml-api", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return f"http://127.0.0.1:{port}", process


def _load(url: str, swap: bool = True) -> None:
    """A bounded mix of traffic: every metric gets at least one sample."""
    rows = sample_rows(20, offset=0) + sample_rows(20, offset=160) + sample_rows(20, offset=300)
    with httpx.Client(base_url=url, timeout=30) as http:
        for start in range(0, len(rows), 5):
            assert http.post("/predict", json={"instances": rows[start : start + 5]}).is_success
        if swap:
            swapped = http.post("/replace_ml_model", json={"tag": "boost"}, headers=auth_headers())
            assert swapped.status_code == 200
            refused = http.post("/replace_ml_model", json={"tag": "gone"}, headers=auth_headers())
            assert refused.status_code == 404
        for start in range(0, len(rows), 10):
            assert http.post("/predict", json={"instances": rows[start : start + 10]}).is_success
        unknown = rows[0] | {"island": "Atlantis"}
        assert http.post("/predict", json={"instances": [unknown]}).is_success
        assert http.post("/predict", json={"instances": []}).status_code == 422
        assert (
            http.post(
                "/predict", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert http.get("/get_experiment_metas").is_success


def _query(prometheus_url: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = response.json()
    assert body.get("status") == "success", f"{expr!r}: {body.get('error')}"
    return body


def _wait_for(prometheus_url: str, expr: str, timeout: float = 60) -> None:
    wait_until(
        lambda: bool(_query(prometheus_url, expr)["data"]["result"]),
        timeout,
        f"Prometheus has data for {expr!r}",
    )


def _has_data(body: dict[str, Any]) -> bool:
    result = body["data"]["result"]
    return bool(result) if isinstance(result, list) else result is not None


EXPRESSIONS = all_expressions() + [
    e for e in all_expressions(model_tag="boost") if e.kind == "panel" and "$" in e.raw
]


@pytest.mark.parametrize("expression", EXPRESSIONS, ids=[e.id for e in EXPRESSIONS])
def test_expression_runs_and_returns_data(monitored: str, expression: Expression) -> None:
    body = _query(monitored, expression.expr)
    if expression.kind in {"alert", "record", "annotation"}:
        # Alerts and event markers are thresholds: a healthy service fires none. What must
        # hold is that the rule is valid and that every metric it watches exists.
        for metric in sorted(referenced_metrics(expression.expr)):
            assert _has_data(_query(monitored, metric)), f"{expression.id}: no {metric}"
        return
    # A scrape that failed on a busy machine leaves a gap; a few seconds later it is filled.
    deadline = time.monotonic() + 4 * SCRAPE_SECONDS
    while not _has_data(body) and time.monotonic() < deadline:
        time.sleep(0.5)
        body = _query(monitored, expression.expr)
    assert _has_data(body), f"{expression.id}: no data for {expression.expr!r}"


def test_metrics_are_aggregated_across_workers(monitored: str) -> None:
    """Two workers: one model_info series per tag (not one per worker)."""
    series = _query(monitored, 'ml_api_model_info{model_tag="boost"}')["data"]["result"]
    assert len(series) == 1
    assert series[0]["value"][1] == "1"
    old = _query(monitored, 'ml_api_model_info{model_tag="base"}')["data"]["result"]
    assert [s["value"][1] for s in old] == ["0"]


def test_a_typo_in_a_metric_name_finds_no_data(monitored: str) -> None:
    """The check above can fail: a misspelt metric returns nothing."""
    assert not _has_data(_query(monitored, "sum(rate(ml_api_predictionz_total[1m]))"))
