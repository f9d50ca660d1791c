"""The closed loop end to end: a real Prometheus evaluates the alert rules on a real
``ml-api serve``, a real Alertmanager routes the alerts to ml-api's webhook, and ml-api's
trigger calls GitLab's pipeline trigger API (a recording server: GitLab cannot run here).

Rules run with their real expressions but ``for: 0s`` and short windows, and Alertmanager
with second-long waits, so the loop closes in seconds; promtool tests the real timings.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FEEDBACK_TOKEN
from tests.e2e.server import Server, auth_headers
from tests.models import labelled_rows, sample_rows
from tests.monitoring.alertmanager import alertmanager_config, running_alertmanager
from tests.monitoring.prometheus import ALERTS, fast_rules, running_prometheus
from tests.recording_server import RecordingServer

pytestmark = pytest.mark.e2e

WEBHOOK_TOKEN = "e2e-webhook-token-0123456789"


def drifted(n: int) -> list[dict[str, Any]]:
    """Rows whose bill length is far off the training distribution."""
    return [row | {"bill_length_mm": 80.0 + i % 7} for i, row in enumerate(sample_rows(n))]


def decisions(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/retraining/decisions", headers=auth_headers(), timeout=10)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def wait_until(condition: Any, what: str, timeout: float = 60, state: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}; {state and state()}"
        time.sleep(0.2)  # polls three servers' state; none offers an event to await


@pytest.fixture
def loop(seed_registry: Path, tmp_path: Path) -> Iterator[tuple[Server, RecordingServer, Any]]:
    registry_dir = tmp_path / "registry"
    shutil.copytree(seed_registry, registry_dir)
    with RecordingServer() as gitlab:
        env = {
            "ML_API_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "ML_API_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
            "ML_API_GITLAB_URL": gitlab.url,
            "ML_API_GITLAB_PROJECT": "42",
            "ML_API_GITLAB_TRIGGER_TOKEN": "glptt-e2e",
            "ML_API_DRIFT_INTERVAL_SECONDS": "0.5",
            "ML_API_RETRAIN_MIN_DRIFT_ROWS": "100",
            "ML_API_RETRAIN_MIN_FEEDBACKS": "50",
            "ML_API_RETRAIN_DATA_SOURCE": "s3://extracts/penguins-latest.parquet",
        }
        with Server(str(registry_dir), env=env) as server:
            token_file = tmp_path / "webhook-token"
            token_file.write_text(WEBHOOK_TOKEN)
            am_config = alertmanager_config(
                f"{server.url}/alerts/webhook", token_file, tmp_path / "am.yml"
            )
            # Quality needs 50 feedbacks in the real rule; here 1, so that the trigger's own
            # minimum is what refuses a quality alert on too few feedbacks.
            rules = fast_rules(
                ALERTS, tmp_path / "alerts.yml", {"[1h]": "[2m]", "[15m]": "[1m]", ">= 50": ">= 1"}
            )
            with (
                running_alertmanager(tmp_path, am_config) as alertmanager,
                running_prometheus(
                    tmp_path, [f"127.0.0.1:{server.port}"], [rules], alertmanager=alertmanager
                ) as prometheus,
            ):
                yield server, gitlab, prometheus


def test_drift_triggers_one_retraining_and_a_quality_alert_on_few_feedbacks_does_not(
    loop: tuple[Server, RecordingServer, Any],
) -> None:
    server, gitlab, prometheus = loop
    # increase() needs a sample before the change: let Prometheus see the counters at 0 first.
    prometheus.wait_for('ml_api_feedback_total{model_tag="base", result="incorrect"}')
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(15):
            assert http.post("/predict", json={"instances": drifted(20)}).status_code == 200
        # A few labelled feedbacks, all wrong: online accuracy far below offline, on 3 rows.
        items = []
        for row, _ in labelled_rows()[:3]:
            body = http.post("/predict", json={"instances": [row]}).json()
            wrong = next(
                c for c in ("Adelie", "Chinstrap", "Gentoo") if c != body["predictions"][0]["label"]
            )
            items.append({"request_id": body["request_id"], "label": wrong})
        sent = http.post(
            "/feedback",
            json={"items": items},
            headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"},
        )
        assert sent.json()["accepted"] == 3

    wait_until(lambda: gitlab.calls, "GitLab's trigger API is called")
    (call,) = gitlab.calls
    assert call.path == "/api/v4/projects/42/trigger/pipeline"
    assert (call.form["token"], call.form["ref"]) == ("glptt-e2e", "main")
    assert call.form["variables[ACTIVE_TAG]"] == "base"
    assert call.form["variables[RETRAIN_KIND]"] == "drift"
    assert "bill_length_mm=" in call.form["variables[DRIFTED_FEATURES]"]
    psi = float(call.form["variables[DRIFTED_FEATURES]"].split("bill_length_mm=")[1].split(",")[0])
    assert psi > 0.2
    assert call.form["variables[DATA_SOURCE]"] == "s3://extracts/penguins-latest.parquet"

    # The quality alert fires too, and is refused for too few feedbacks.
    wait_until(
        lambda: any(d["reason"] == "too_few_feedbacks" for d in decisions(server.url)),
        "the quality alert is skipped for too few feedbacks",
        state=lambda: (
            [
                a["labels"]["alertname"]
                for a in prometheus.firing("MlApiOnlineAccuracyBelowOffline")
            ],
            prometheus.query("ml_api_feedback_total")["data"]["result"],
            [(d["reason"], d["alerts"]) for d in decisions(server.url)][:5],
        ),
    )
    skipped = next(d for d in decisions(server.url) if d["reason"] == "too_few_feedbacks")
    assert "3 labelled feedbacks" in skipped["detail"]

    # More drifted traffic inside the cool-down: Alertmanager repeats, nothing is triggered.
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(5):
            http.post("/predict", json={"instances": drifted(20)})
    wait_until(
        lambda: any(d["reason"] == "cooldown" for d in decisions(server.url)),
        "a repeated drift alert is skipped for the cool-down",
    )
    assert len(gitlab.calls) == 1
    assert prometheus.firing("MlApiInputDrift")
