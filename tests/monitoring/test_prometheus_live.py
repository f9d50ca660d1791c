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

from app.registry.store import ModelRegistry
from tests.conftest import FEEDBACK_TOKEN
from tests.e2e.server import Server, auth_headers, revision_reached
from tests.local_server import free_port, wait_for_port, wait_until
from tests.models import labelled_rows, publish_island_biased, sample_rows
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
    publish_island_biased(ModelRegistry(str(registry_dir)), "weak")
    env = {
        "ML_API_DRIFT_INTERVAL_SECONDS": "0.5",
        "ML_API_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
        "ML_API_FEEDBACK_FLUSH_SECONDS": "0.1",
    }
    node_port, node_exporter = _start_node_exporter(root)
    try:
        with Server(str(registry_dir), workers=2, env=env) as service:
            prometheus_url, process = _start_prometheus(binary, root, service.port, node_port)
            try:
                _wait_for(prometheus_url, 'ml_api_model_swaps_total{result="success"}')
                _load(service.url)
                _wait_for(prometheus_url, 'count(ml_api_input_drift_psi{model_tag="boost"})')
                _load(service.url, swap=False)
                _experiment(service.url)
                # A/B and bandit gauges are exported every few seconds once feedback arrived.
                _wait_for(prometheus_url, "ml_api_ab_srm_p_value")
                _wait_for(prometheus_url, "ml_api_bandit_probability_best")
                _wait_for(prometheus_url, "ml_api_shadow_rows_total > 0")
                # Two scrapes after the last traffic: rate() and increase() have samples.
                _wait_for(prometheus_url, 'count_over_time(up{job="ml-api"}[1m]) > 3')
                yield prometheus_url
            finally:
                process.terminate()
                process.wait(timeout=30)
    finally:
        node_exporter.terminate()
        node_exporter.wait(timeout=30)


def _start_node_exporter(root: Path) -> tuple[int, Any]:
    """Debian's prometheus-node-exporter, for the host dashboard's queries."""
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        pytest.skip(
            "node-exporter not installed (apt-get install prometheus-node-exporter); .ci/run does"
        )
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return port, process


def _start_prometheus(
    binary: str, root: Path, service_port: int, node_port: int
) -> tuple[str, Any]:
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": "1s"},
        "rule_files": [str(Path(__file__).resolve().parents[2] / "prometheus" / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "ml-api", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]},
            {
                "job_name": "node-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}],
            },
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


def _experiment(url: str) -> None:
    """A bandit over base and boost with a shadow, and labelled feedback for what it served."""
    spec = {
        "primary": "base",
        "candidates": [{"tag": "boost", "weight": 50}],
        "shadows": [{"tag": "weak", "percent": 100}],
        "bandit": {"warmup_feedbacks": 0, "interval_seconds": 1},
    }
    response = httpx.put(f"{url}/deployment", json=spec, headers=auth_headers(), timeout=30)
    assert response.status_code == 200, response.text
    # Both workers on the new spec first: a worker still on the previous one (no split, no
    # shadow) would serve the whole sequence below on its keep-alive connection.
    revision_reached(url, response.json()["revision"], workers=2)
    items = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for i, (row, label) in enumerate(labelled_rows(seed=2)[:60]):
            body = http.post(
                "/predict", json={"instances": [row]}, headers={"X-ML-API-Key": f"u{i}"}
            ).json()
            # Every third label contradicts the model, so each arm has successes and failures
            # and the A/B tests have something to test.
            if i % 3 == 0:
                label = next(
                    c for c in ("Adelie", "Gentoo") if c != body["predictions"][0]["label"]
                )
            items.append({"request_id": body["request_id"], "label": label})
        feedback = http.post(
            "/feedback",
            json={"items": items},
            headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"},
        )
        assert feedback.json()["accepted"] == len(items), feedback.text


def _query(prometheus_url: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = response.json()
    assert body.get("status") == "success", f"{expr!r}: {body.get('error')}"
    return body


def _ready_with_data(prometheus_url: str, expr: str) -> bool:
    # A Prometheus still starting answers 503 in plain text: not yet, rather than a failure.
    if httpx.get(f"{prometheus_url}/-/ready", timeout=10).status_code != 200:
        return False
    return bool(_query(prometheus_url, expr)["data"]["result"])


def _wait_for(prometheus_url: str, expr: str, timeout: float = 60) -> None:
    wait_until(
        lambda: _ready_with_data(prometheus_url, expr),
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
    """Two workers: one model_info series per tag and role (not one per worker). boost was
    the primary after the swap, then a candidate; base the primary again."""

    def values(selector: str) -> list[str]:
        return [s["value"][1] for s in _query(monitored, selector)["data"]["result"]]

    assert values('ml_api_model_info{model_tag="boost", role="candidate"}') == ["1"]
    assert values('ml_api_model_info{model_tag="boost", role="primary"}') == ["0"]
    assert values('ml_api_model_info{model_tag="base", role="primary"}') == ["1"]
    assert values('ml_api_model_info{model_tag="weak", role="shadow"}') == ["1"]


def test_a_typo_in_a_metric_name_finds_no_data(monitored: str) -> None:
    """The check above can fail: a misspelt metric returns nothing."""
    assert not _has_data(_query(monitored, "sum(rate(ml_api_predictionz_total[1m]))"))
