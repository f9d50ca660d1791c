"""The Grafana dashboards: generated from code, complete, and only using real ml-api metrics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import promql
from .promql import REPO_ROOT

GRAFANA_DIR = REPO_ROOT / "grafana"
GENERATOR = GRAFANA_DIR / "generate_dashboards.py"
MODEL_MONITORING = GRAFANA_DIR / "dashboards" / "model-monitoring.json"
DATASOURCE_UID = "prometheus"

#: The metrics ml-api exports at GET /metrics (the contract with app/metrics.py), by type.
#: A dashboard or alert naming anything else is a typo or a metric the service never exports.
METRIC_CONTRACT = {
    "ml_api_http_requests_total": "counter",
    "ml_api_http_request_duration_seconds": "histogram",
    "ml_api_http_requests_in_progress": "gauge",
    "ml_api_predictions_total": "counter",
    "ml_api_prediction_confidence": "histogram",
    "ml_api_rows_per_request": "histogram",
    "ml_api_invalid_requests_total": "counter",
    "ml_api_model_info": "gauge",
    "ml_api_model_swaps_total": "counter",
    "ml_api_model_load_seconds": "histogram",
    "ml_api_model_ready": "gauge",
    "ml_api_input_drift_psi": "gauge",
    "ml_api_unknown_categories_total": "counter",
    "ml_api_model_errors_total": "counter",
    "ml_api_model_inference_seconds": "histogram",
    "ml_api_traffic_weight_percent": "gauge",
    "ml_api_deployment_changes_total": "counter",
    "ml_api_shadow_requests_total": "counter",
    "ml_api_shadow_rows_total": "counter",
    "ml_api_shadow_agreements_total": "counter",
    "ml_api_shadow_probability_diff": "histogram",
    "ml_api_shadow_latency_seconds": "histogram",
    "ml_api_shadow_dropped_total": "counter",
    "ml_api_shadow_errors_total": "counter",
    "ml_api_canary_guard_events_total": "counter",
    "ml_api_feedback_total": "counter",
    "ml_api_feedback_items_total": "counter",
    "ml_api_model_offline_accuracy": "gauge",
    "ml_api_ab_success_rate": "gauge",
    "ml_api_ab_p_value": "gauge",
    "ml_api_ab_srm_p_value": "gauge",
    "ml_api_bandit_probability_best": "gauge",
    "ml_api_worker_cpu_seconds": "gauge",
    "ml_api_feedback_store_errors_total": "counter",
    "ml_api_retrain_decisions_total": "counter",
    "ml_api_worker_resident_memory_bytes": "gauge",
}
SERIES_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
EXPOSED_SERIES = {
    name + suffix for name, kind in METRIC_CONTRACT.items() for suffix in SERIES_SUFFIXES[kind]
}

MODEL_ROW_PANELS = {
    "Active model",
    "Model swap events",
    "Average confidence",
    "Confidence distribution",
    "Predictions by class",
    "Input drift (PSI) by feature",
}
#: Model panels that show one model's behaviour, so they follow the model_tag variable.
MODEL_TAG_PANELS = {
    "Average confidence",
    "Confidence distribution",
    "Predictions by class",
    "Input drift (PSI) by feature",
    "Unknown categories by feature",
}
SERVICE_ROW_PANELS = {
    "Successful requests",
    "Requests by status",
    "Throughput by route",
    "Latency p50 / p95 / p99",
    "In-flight requests",
    "Invalid requests by reason",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return promql.load_dashboard(MODEL_MONITORING)


def panels_by_row(dashboard: dict[str, Any]) -> dict[str | None, dict[str, dict[str, Any]]]:
    rows: dict[str | None, dict[str, dict[str, Any]]] = {}
    for row, panel in promql.iter_panels(dashboard):
        if panel.get("type") != "row":
            rows.setdefault(row, {})[panel["title"]] = panel
    return rows


def content_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for _, panel in promql.iter_panels(dashboard) if panel.get("type") != "row"]


def test_committed_json_is_what_the_generator_writes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    generated = {path.name: path.read_text(encoding="utf-8") for path in tmp_path.glob("*.json")}
    committed = {path.name: path.read_text(encoding="utf-8") for path in promql.dashboard_files()}
    assert sorted(committed) == sorted(generated)
    for name, text in generated.items():
        assert committed[name] == text, (
            f"grafana/dashboards/{name} is stale: run python grafana/generate_dashboards.py"
        )


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "ml-api-model-monitoring"
    assert dashboard["title"] == "Model monitoring"
    assert dashboard.get("id") is None, "provisioned dashboards must not pin a numeric id"


def test_every_panel_has_a_query(dashboard: dict[str, Any]) -> None:
    for panel in content_panels(dashboard):
        exprs = [target.get("expr", "").strip() for target in panel.get("targets", [])]
        assert any(exprs), f"panel {panel.get('title')!r} has no PromQL target"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel.get("id") for _, panel in promql.iter_panels(dashboard)]

    assert None not in ids
    assert len(ids) == len(set(ids))


def test_model_and_service_rows_hold_their_panels(dashboard: dict[str, Any]) -> None:
    rows = panels_by_row(dashboard)

    assert set(rows.get("Model", {})) >= MODEL_ROW_PANELS
    assert set(rows.get("Service", {})) >= SERVICE_ROW_PANELS


def test_model_tag_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    model_tag = variables["model_tag"]
    assert model_tag["type"] == "query"
    assert model_tag["query"] == "label_values(ml_api_model_info, model_tag)"
    assert model_tag["datasource"]["uid"] == DATASOURCE_UID
    assert model_tag["includeAll"] is True
    assert model_tag["allValue"] == ".*"


@pytest.mark.parametrize("title", sorted(MODEL_TAG_PANELS))
def test_model_panels_follow_the_model_tag_variable(dashboard: dict[str, Any], title: str) -> None:
    panel = panels_by_row(dashboard)["Model"][title]

    for target in panel["targets"]:
        assert 'model_tag=~"$model_tag"' in target["expr"]


def test_variables_are_only_used_in_regex_matchers(dashboard: dict[str, Any]) -> None:
    """Multi-value variables expand to a regex (a|b, .*): an = matcher would break them."""
    names = [v["name"] for v in dashboard["templating"]["list"]]
    exprs = [e.raw for e in promql.dashboard_expressions() if e.kind != "variable"]
    for name in names:
        for expr in exprs:
            uses = len(re.findall(rf"\${name}\b|\$\{{{name}", expr))
            assert uses == expr.count(f'=~"${name}"'), expr


def test_every_query_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert [ds["uid"] for ds in provisioned["datasources"]] == [DATASOURCE_UID]

    for panel in content_panels(dashboard):
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]


def test_dashboard_provider_serves_the_dashboards_folder() -> None:
    provider = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "ml-api.yml").read_text()
    )["providers"][0]

    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_node_exporter_full_is_linked(dashboard: dict[str, Any]) -> None:
    urls = [link.get("url", "") for link in dashboard.get("links", [])]

    assert any("rYdddlPWk" in url for url in urls)
    assert any(url.endswith("/dashboards/1860") for url in urls)


def test_every_referenced_metric_is_in_the_contract() -> None:
    unknown = {
        (expression.id, metric)
        for expression in promql.all_expressions()
        for metric in promql.referenced_metrics(expression.raw)
        if metric not in EXPOSED_SERIES
    }

    assert not unknown, f"metrics ml-api does not export: {sorted(unknown)}"


def test_every_contract_metric_is_shown_or_alerted_on() -> None:
    referenced = {
        metric
        for expression in promql.all_expressions()
        for metric in promql.referenced_metrics(expression.raw)
    }
    unused = {
        name
        for name, kind in METRIC_CONTRACT.items()
        if not any(name + suffix in referenced for suffix in SERIES_SUFFIXES[kind])
    }

    assert not unused


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(ml_api_predictions_total[1m])", {"ml_api_predictions_total"}),
        ("rate(ml_api_predictons_total[1m])", {"ml_api_predictons_total"}),
        (
            'sum by (le) (ml_api_rows_per_request_bucket{job="ml-api"}) / ml_api_model_ready',
            {"ml_api_rows_per_request_bucket", "ml_api_model_ready"},
        ),
    ],
)
def test_metric_parser_finds_every_ml_api_identifier(expr: str, expected: set[str]) -> None:
    assert promql.referenced_metrics(expr) == expected
