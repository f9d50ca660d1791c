"""The Prometheus alert rules: valid, documented, and unit-tested both ways with promtool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .promql import REPO_ROOT
from .promtool import run_promtool

PROMETHEUS_DIR = REPO_ROOT / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"

#: What the monitoring issue asks for.
REQUIRED_ALERTS = {
    "MlApiDown",
    "MlApiNoModelReady",
    "MlApiHigh5xxRatio",
    "MlApiHighP99Latency",
    "MlApiModelSwapFailed",
    "MlApiInputDrift",
    "MlApiConfidenceCollapse",
}
SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ANNOTATIONS = {"summary", "description", "runbook"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"] if "alert" in rule
    ]


def test_promtool_check_rules_passes(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", ALERTS, cwd=PROMETHEUS_DIR)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", ALERTS_TEST, cwd=PROMETHEUS_DIR)

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_passes_and_loads_the_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "config", CONFIG, cwd=PROMETHEUS_DIR)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_scrape_config_targets_the_compose_services() -> None:
    config = load_yaml(CONFIG)
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }

    assert targets["ml-api"] == ["ml-api:8000"]
    assert targets["node-exporter"] == ["node-exporter:9100"]
    assert config["rule_files"] == ["alerts.yml"]


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}

    assert names >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    missing = REQUIRED_ANNOTATIONS - {key for key, value in annotations.items() if value}
    assert not missing, f"{rule['alert']} lacks annotations {sorted(missing)}"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """At least one promtool case expects the alert and one expects silence."""
    firing: set[str] = set()
    silent: set[str] = set()
    for test in load_yaml(ALERTS_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}

    assert names - firing == set(), "alerts never expected to fire"
    assert names - silent == set(), "alerts never expected to stay silent"


def test_unit_tests_load_the_rule_file() -> None:
    assert load_yaml(ALERTS_TEST)["rule_files"] == ["alerts.yml"]
